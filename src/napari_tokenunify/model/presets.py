"""Named network configurations.

``base`` is the published EMmamba (TokenUnify's finetuning network, 28.3 M parameters). The
``100m``..``1b`` presets widen it like TokenUnify's scale variants; ``tiny`` is ours, small enough
to run and train interactively on a laptop CPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of an EMMamba network."""

    in_channels: int = 1
    out_channels: int = 3
    depths: tuple[int, ...] = (2, 2, 2, 2)
    feature_sizes: tuple[int, ...] = (32, 64, 128, 256)
    hidden_size: int = 512
    kernel_size: tuple[int, int, int] = (1, 5, 5)
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    patch_size: tuple[int, int, int] = (16, 160, 160)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.depths) != 4 or len(self.feature_sizes) != 4:
            raise ValueError("EMMamba has 4 stages: depths and feature_sizes need 4 entries each")
        if self.in_channels < 1 or self.out_channels < 1:
            raise ValueError("in_channels and out_channels must be >= 1")
        object.__setattr__(self, "depths", tuple(int(v) for v in self.depths))
        object.__setattr__(self, "feature_sizes", tuple(int(v) for v in self.feature_sizes))
        object.__setattr__(self, "kernel_size", tuple(int(v) for v in self.kernel_size))
        object.__setattr__(self, "patch_size", tuple(int(v) for v in self.patch_size))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    def with_overrides(self, **overrides: Any) -> ModelConfig:
        unknown = set(overrides) - set(self.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown model option(s) {', '.join(sorted(unknown))}; "
                f"choose from {', '.join(sorted(self.__dataclass_fields__))}"
            )
        return replace(self, **overrides)


PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(depths=(1, 1, 1, 1), feature_sizes=(8, 16, 32, 64), hidden_size=128),
    "base": ModelConfig(),
    # scale variants: widths x ~1.9 / 2.75 / 4.25 / 6, hidden = 2 x last width (as in base);
    # 98.9 M, 212.4 M, 506.6 M and 1008.9 M parameters (1b is TokenUnify's 1008.91 M model).
    "100m": ModelConfig(feature_sizes=(60, 120, 240, 480), hidden_size=960),
    "200m": ModelConfig(feature_sizes=(88, 176, 352, 704), hidden_size=1408),
    "500m": ModelConfig(feature_sizes=(136, 272, 544, 1088), hidden_size=2176),
    "1b": ModelConfig(feature_sizes=(192, 384, 768, 1536), hidden_size=3072),
}


def get_preset(name: str) -> ModelConfig:
    """The configuration called ``name`` (case-insensitive)."""
    key = str(name).lower()
    if key not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[key]
