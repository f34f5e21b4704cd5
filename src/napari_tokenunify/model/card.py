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
    def recommended_scoring(self) -> str:
        """The waterz merge score the threshold was chosen with (``training.segmentation_scoring``:
        "median" or "mean"), or "median", waterz's and TokenUnify's usual one."""
        value = self.training.get("segmentation_scoring")
        return value if value in ("median", "mean") else "median"

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


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


def score_line(scores: Any) -> str | None:
    """``VOI 0.412 (split 0.2, merge 0.21), ARAND 0.061 at threshold 0.3``, or None."""
    if not isinstance(scores, dict) or "arand" not in scores:
        return None
    if "voi" not in scores and "voi_split" not in scores:
        return None
    voi = scores.get("voi", scores.get("voi_split", 0.0) + scores.get("voi_merge", 0.0))
    parts = f"VOI {voi:.3f}"
    if "voi_split" in scores and "voi_merge" in scores:
        parts += f" (split {scores['voi_split']:.3f}, merge {scores['voi_merge']:.3f})"
    parts += f", ARAND {scores['arand']:.3f}"
    if isinstance(scores.get("threshold"), (int, float)):
        parts += f" at threshold {scores['threshold']:g}"
    return parts


METRIC_LABELS = {
    "validation": "validation in training (chose the checkpoint)",
    "validation_before": "validation of the starting model (same data)",
    "validation_mean": "validation as shipped (bench_quality, mean)",
    "test": "test (reported only)",
}


def metric_label(key: str) -> str:
    """What a card's metrics entry measured, in words (the raw key when unknown): the
    in-training and the as-shipped validation differ (checkpoint tiles and scoring against
    ``tokenunify run``'s), and side by side without labels they read as a contradiction."""
    return METRIC_LABELS.get(key, key)


def describe_card(card: ModelCard) -> list[str]:
    """The card as readable lines (``tokenunify info MODEL``): what the model is, how to run it,
    how it was trained (and from what) and how it scored."""
    lines = [f"name: {card.name or '(none)'}"]
    if card.description:
        lines.append(f"description: {card.description}")
    lines.append(f"preset: {card.preset} ({card.in_channels} → {card.out_channels} channels)")
    vs = card.voxel_size_nm
    lines.append(f"voxel size (nm, z y x): {_fmt(vs) if vs else 'not recorded'}")
    lines.append(f"normalization: {_fmt(card.normalization)}")
    lines.append(f"patch size (z, y, x): {_fmt(card.patch_size)}")
    lines.append(f"offsets: {card.offsets}")
    t = card.training or {}
    choice = f" ({t['threshold_choice']})" if t.get("threshold_choice") else ""
    lines.append(f"recommended threshold: {card.recommended_threshold:g}{choice}")
    lines.append(f"recommended agglomeration scoring: {card.recommended_scoring}")
    lines.append(f"recommended test-time flips: {card.recommended_tta}")
    if t:
        lines.append("training:")
        start = t.get("started_from")
        if isinstance(start, dict):
            sha = start.get("weights_sha256")
            src = f", {start['source']}" if start.get("source") else ""
            lines.append(f"  started from: {start.get('name', '?')}"
                         + (f" (weights sha256 {sha[:16]}…{src})" if sha else src))
        elif t.get("init"):
            lines.append(f"  started from: {t['init']}")
        data = t.get("data")
        if isinstance(data, dict) and data:
            lines.append(f"  data: {_fmt(data)}")
        region = t.get("region")
        if isinstance(region, dict) and region:
            lines.append(f"  region: {_fmt(region)}")
        done = [f"{t['steps']} steps" if "steps" in t else None,
                f"best at step {t['best_step']}" if "best_step" in t else None,
                f"{t['seconds']:g} s" if isinstance(t.get("seconds"), (int, float)) else None,
                f"on {t['device']}" if t.get("device") else None,
                f"finished {t['finished']}" if t.get("finished") else None]
        done = [d for d in done if d]
        if done:
            lines.append("  run: " + ", ".join(done))
        if t.get("kept"):
            lines.append(f"  kept: {t['kept']}")
        views = t.get("permuted_views")
        if isinstance(views, dict) and "on" in views:
            lines.append(f"  permuted views: {'on' if views['on'] else 'off'}"
                         + (f" ({views['why']})" if views.get("why") else ""))
        on = t.get("start_on_corrections")
        if isinstance(on, dict) and "best" in on and "threshold" in on:
            table, t0, tb = on.get("table", {}), f"{on['threshold']:g}", f"{on['best']:g}"
            lines.append(f"  the start on the corrections: VOI {table.get(t0, '?')} at its threshold "
                         f"{t0}, best {table.get(tb, '?')} at {tb}")
        config = t.get("config")
        if isinstance(config, dict) and config:
            lines.append(f"  config: {_fmt(config)}")
        for key in ("objective", "lsd", "auxiliary_offsets", "distillation", "hardware"):
            if t.get(key):
                lines.append(f"  {key}: {_fmt(t[key])}")
    if card.metrics:
        lines.append("metrics:")
        for key, scores in card.metrics.items():
            line = score_line(scores)
            if line is not None:
                lines.append(f"  {metric_label(key)}: {line}")
            elif not isinstance(scores, dict):
                lines.append(f"  {key}: {_fmt(scores)}")
    lines.append(f"written by napari-tokenunify {card.version} (card version {card.card_version})")
    return lines
