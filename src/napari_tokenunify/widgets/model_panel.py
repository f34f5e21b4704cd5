"""Model section: the bundled default model, a model file, the device, and the model card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, FileEdit, Label, PushButton, TextEdit

from napari_tokenunify.devices import DEVICE_CHOICES, available_devices
from napari_tokenunify.model.card import metric_label

from .base import Panel

BUNDLED_SUFFIX = " (bundled)"
DEFAULT = "default" + BUNDLED_SUFFIX
TINY = "tiny (untrained, for trying things out)"
FILE = "model file…"


def model_sources() -> list[str]:
    """The choices: the bundled default first, the other bundled models, untrained tiny, a file."""
    from napari_tokenunify.model.bundled import bundled_names

    others = [n + BUNDLED_SUFFIX for n in bundled_names() if n != "default"]
    return [DEFAULT, *others, TINY, FILE]


SOURCES = tuple(model_sources())


def load_model_source(source: str, path: str | Path | None, device: str) -> Any:
    """Load the chosen model (runs in a worker): a bundled model, untrained tiny, or a file."""
    from napari_tokenunify.model import build_model, load_model

    if source == TINY:
        model = build_model("tiny")
        model.eval()
        return model
    if source == FILE:
        if _no_path(path):
            raise ValueError("choose a model file (.safetensors with card.json, a model folder or a TokenUnify .pth)")
        return load_model(str(path), device=device)
    return load_model(source.removesuffix(BUNDLED_SUFFIX), device=device)


def _no_path(path: str | Path | None) -> bool:
    """An empty model-file field: magicgui gives ``.`` or, once cleared, the working folder
    (which then read as "<cwd>/model.safetensors not found")."""
    if not path or str(path).strip() in ("", "."):
        return True
    p = Path(path).expanduser()
    return p.is_dir() and p.resolve() == Path.cwd().resolve() and not any(
        (p / n).exists() for n in ("model.safetensors", "card.json"))


def describe(model: Any) -> str:
    """A few short lines about a model: what it is, how to run it, how it scored (the card's
    nested training record stays in card.json; here it would be a wall of text)."""
    n = sum(p.numel() for p in model.parameters())
    card = getattr(model, "card", None)
    lines = [f"parameters: {n / 1e6:.2f} M"]
    if card is not None:  # what a person needs first comes first: the box shows a few lines
        lines.insert(0, f"preset: {card.preset}" + (f" ({card.name})" if getattr(card, "name", "") else ""))
        start = (card.training or {}).get("started_from")
        if isinstance(start, dict):  # a finetuned model: what it came from and was trained on
            t, data = card.training, card.training.get("data") or {}
            on = data.get("labels") or data.get("raw") or data.get("image")
            name = str(start.get("name", "?"))
            how = ("trained from scratch" if name == "scratch" or name.startswith("untrained")
                   else f"finetuned from {name}")
            lines.append(how + (f" on {on}" if on else "")
                         + f": {t.get('steps', '?')} steps, {t.get('seconds', 0):.0f} s ({t.get('device', '?')})")
        lines.append(f"recommended: threshold {card.recommended_threshold:g}, "
                     f"test-time flips {card.recommended_tta}")
        for name, scores in (card.metrics or {}).items():
            if isinstance(scores, dict) and "arand" in scores and ("voi" in scores or "voi_split" in scores):
                voi = scores.get("voi", scores.get("voi_split", 0) + scores.get("voi_merge", 0))
                lines.append(f"{metric_label(name)}: VOI {voi:.3f}, ARAND {scores['arand']:.3f}")
        lines.append(f"patch size (z, y, x): {tuple(card.patch_size)}")
        vs = card.voxel_size_nm
        lines.append(f"voxel size (nm): {tuple(vs) if vs else 'not recorded'}")
        lines.append(f"offsets: {card.offsets}")
        steps = card.training.get("steps") if card.training else None
        if steps and not isinstance((card.training or {}).get("started_from"), dict):
            lines.append(f"last training stage: {steps} steps")
        if getattr(card, "description", ""):
            lines.append(card.description)
    return "\n".join(lines)


class ModelPanel(Panel):
    title = "Model"

    def __init__(self, viewer, session, events) -> None:
        super().__init__(viewer, session, events)
        found = available_devices()
        self.source = ComboBox(label="model", choices=list(SOURCES), value=DEFAULT)
        self.path = FileEdit(label="model file", mode="r", filter="*.safetensors *.pth *.pt *.json")
        self.device = ComboBox(label="device", choices=list(DEVICE_CHOICES), value="auto")
        self.found = Label(value=f"found: {', '.join(found)}")
        self.load_btn = PushButton(text="Load model")
        self.card = TextEdit(label="card", value="no model loaded yet (the default loads on first use)")
        self.card.native.setReadOnly(True)
        self.card.native.setMaximumHeight(130)
        self.form.extend([self.source, self.path, self.device, self.found, self.load_btn, self.card])
        self.load_btn.changed.connect(self.load)
        self.device.changed.connect(self._device_changed)
        events.model_changed.connect(self._show)

    def _device_changed(self, value: str) -> None:
        self.session.device = value

    def load(self, *_: Any):
        source, path, device = self.source.value, self.path.value, self.device.value

        def work(progress=None, cancel=None):
            return load_model_source(source, path, device)

        return self.run(work, "Load model", on_result=self.set_model, show_progress=False)

    def set_model(self, model: Any) -> None:
        self.session.model = model
        self.session.model_source = self.source.value
        self.events.model_changed.emit(model)

    def _show(self, model: Any) -> None:
        self.card.value = describe(model) if model is not None else "no model"
