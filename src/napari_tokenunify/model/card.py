"""The model card: what a saved network is and how it was made (stored as ``card.json``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..affinities import NEAREST_OFFSETS

CARD_VERSION = 1


def _package_version() -> str:
    from .. import __version__

    return __version__


@dataclass
class ModelCard:
    """Metadata saved beside the weights.

    ``offsets``: one (dz, dy, dx) per output channel (affinity between v and v - offset);
    ``normalization``: how raw intensities map to the model's [0, 1] input (see
    ``engine.normalize``); ``voxel_size_nm``: (z, y, x) it was trained at, if known;
    ``config``: the architecture (``ModelConfig.to_dict()``), so a card alone rebuilds the net.
    """

    preset: str = "tiny"
    in_channels: int = 1
    out_channels: int = 3
    offsets: list[list[int]] = field(default_factory=lambda: [list(o) for o in NEAREST_OFFSETS])
    patch_size: list[int] = field(default_factory=lambda: [16, 160, 160])
    normalization: Any = field(default_factory=lambda: {"mode": "auto"})
    voxel_size_nm: list[float] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    version: str = field(default_factory=_package_version)
    config: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    description: str = ""
    card_version: int = CARD_VERSION

    def __post_init__(self) -> None:
        self.in_channels = int(self.in_channels)
        self.out_channels = int(self.out_channels)
        self.offsets = [[int(v) for v in o] for o in (self.offsets or [])]
        self.patch_size = [int(v) for v in self.patch_size]
        if self.voxel_size_nm is not None:
            self.voxel_size_nm = [float(v) for v in self.voxel_size_nm]

    @property
    def recommended_threshold(self) -> float:
        """The agglomeration threshold chosen at validation (``training.segmentation_threshold``,
        else ``metrics.threshold``), or waterz's usual 0.5 when the card names none."""
        for value in (self.training.get("segmentation_threshold"), self.metrics.get("threshold")):
            if isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0:
                return float(value)
        return 0.5

    @property
    def recommended_tta(self) -> str:
        """The test-time flips chosen at validation (``training.test_time_flips``: "none", "yx"
        or "zyx"), or "none" when the card names none. Jobs (the CLI, the Predict section) use
        it unless told otherwise; ``predict_affinities`` itself does only what it is asked."""
        value = self.training.get("test_time_flips")
        return value if value in ("none", "yx", "zyx") else "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        if not isinstance(data, dict):
            raise ValueError(f"a model card must be a JSON object, not {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        main = {k: v for k, v in data.items() if k in known}
        card = cls(**main)
        extra = {k: v for k, v in data.items() if k not in known}
        if extra:  # keep unknown keys (written by a newer version) under training["_extra"]
            card.training = {**card.training, "_extra": extra}
        return card

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"model card is not valid JSON: {err}") from err
        return cls.from_dict(data)
