"""Building, saving and loading networks (our format: ``model.safetensors`` + ``card.json``)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..devices import resolve_device
from .card import ModelCard
from .checkpoint import ModelFileError, infer_config, load_state_strict, preset_for, read_pth
from .network import EMMamba
from .presets import ModelConfig, get_preset

WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "card.json"
PTH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
UNET_PRESET = "unet"  # cards with this preset describe the residual U-Net, not EMmamba


def build_model(preset: str = "tiny", out_channels: int = 3, **overrides: Any) -> EMMamba:
    """A freshly initialised EMMamba of the named preset (see ``PRESETS``) with ``out_channels``
    outputs; ``overrides`` change other ``ModelConfig`` fields (e.g. ``depths=(1, 1, 1, 1)``)."""
    config = get_preset(preset).with_overrides(out_channels=out_channels, **overrides)
    return _from_config(config, preset.lower(), None)


def _from_config(config: ModelConfig, preset: str | None, card: ModelCard | None) -> EMMamba:
    model = EMMamba(config, preset=preset)
    if card is None:
        card = ModelCard(
            preset=preset or "custom",
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            patch_size=list(config.patch_size),
            offsets=_default_offsets(config.out_channels),
        )
    card.config = config.to_dict()
    model.card = card
    return model


def _default_offsets(n: int) -> list[list[int]]:
    from ..affinities import NEAREST_OFFSETS

    return [list(o) for o in NEAREST_OFFSETS] if n == 3 else []


def save_model(
    model: EMMamba, directory: str | Path, card: ModelCard | None = None, half: bool = False
) -> Path:
    """Write ``directory/model.safetensors`` and ``directory/card.json``; returns the folder.

    Each file is written under a temporary name and then renamed, so neither is ever left
    half-written. ``half`` stores floating-point weights as float16 (half the file; they load
    back as float32), for bundling a network whose 32-bit weights would be too large.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    card = card or getattr(model, "card", None) or ModelCard(preset=getattr(model, "preset", None) or "custom")
    config = getattr(model, "config", None)
    if isinstance(config, dict):  # the U-Net: its constructor arguments
        card.config = dict(config)
        card.in_channels = int(config["in_channels"])
        card.out_channels = int(config["out_channels"])
    elif config is not None:
        card.config = config.to_dict()
        card.in_channels = config.in_channels
        card.out_channels = config.out_channels
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    meta = {"format": "napari-tokenunify", "preset": str(card.preset),
            "weights_dtype": "float16" if half else "float32"}
    _atomic(directory / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata=meta))
    _atomic(directory / CARD_NAME, lambda p: Path(p).write_text(card.to_json() + "\n", encoding="utf-8"))
    model.card = card
    return directory


def _atomic(target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_model(
    source: str | Path,
    device: str | torch.device = "auto",
    preset: str | None = None,
) -> EMMamba:
    """Load a network in eval mode, with ``model.card``.

    ``source``: a model folder (``model.safetensors`` + ``card.json``), a ``.safetensors`` file
    with ``card.json`` (or ``<name>.json``) beside it, a TokenUnify ``.pth`` checkpoint, or the
    name of a bundled model (``"default"``). ``preset`` only applies to ``.pth`` files: it
    checks the checkpoint against that preset instead of inferring the architecture.
    """
    path = _resolve_source(source)
    if path.is_dir():
        model = _load_safetensors(path / WEIGHTS_NAME, path / CARD_NAME)
    elif path.suffix == ".safetensors":
        card_path = path.with_name(CARD_NAME)
        if not card_path.is_file():
            card_path = path.with_suffix(".json")
        model = _load_safetensors(path, card_path)
    elif path.suffix in PTH_SUFFIXES:
        model = load_pth(path, preset=preset)
    else:
        raise ModelFileError(
            f"{path} is not a model: give a model folder, a .safetensors file or a TokenUnify "
            f".pth checkpoint ({', '.join(PTH_SUFFIXES)})"
        )
    model = model.to(resolve_device(device)).eval()
    model.source_path = str(path.resolve())  # where it came from: finetuning never writes there
    return model


def weights_sha256(model: torch.nn.Module | dict[str, torch.Tensor]) -> str:
    """SHA-256 of a network's weights (its state dict: names, dtypes, shapes and values, in name
    order), the same for a model in memory and one loaded from its file: a model card names the
    exact weights it started from with it."""
    import hashlib

    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu")
        if t.is_floating_point():  # weights stored in 16 bits load as 32: hash what runs
            t = t.float()
        t = t.contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def read_card(source: str | Path) -> tuple[ModelCard, Path]:
    """A model's card and the file or folder it came from, without building the network (a
    folder, a ``.safetensors`` with its card, a bundled model's name; a ``.pth`` is loaded to
    describe it)."""
    path = _resolve_source(source)
    if path.is_dir():
        card_path = path / CARD_NAME
    elif path.suffix == ".safetensors":
        card_path = path.with_name(CARD_NAME)
        if not card_path.is_file():
            card_path = path.with_suffix(".json")
    elif path.suffix in PTH_SUFFIXES:
        return load_pth(path).card, path
    else:
        raise ModelFileError(f"{path} is not a model: give a model folder, a .safetensors file or a "
                             f"TokenUnify .pth checkpoint ({', '.join(PTH_SUFFIXES)})")
    if not card_path.is_file():
        raise FileNotFoundError(f"{card_path} not found: this model has no card")
    try:
        return ModelCard.from_json(card_path.read_text(encoding="utf-8")), path
    except (ValueError, TypeError) as err:
        raise ModelFileError(f"{card_path} is not a valid model card: {err}") from err


def _resolve_source(source: str | Path) -> Path:
    path = Path(source).expanduser()
    if path.exists():
        return path
    text = str(source)
    if os.sep not in text and "/" not in text and not path.suffix:
        from .bundled import bundled_path

        return bundled_path(text)
    raise FileNotFoundError(f"model {source} not found: no such file or folder")


def _load_safetensors(weights: Path, card_path: Path) -> EMMamba:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found (a model folder holds {WEIGHTS_NAME} and {CARD_NAME})")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(f"{weights} is not a readable safetensors file ({err}); it may be corrupt") from err
    card = None
    if card_path.is_file():
        try:
            card = ModelCard.from_json(card_path.read_text(encoding="utf-8"))
        except (ValueError, TypeError) as err:
            raise ModelFileError(f"{card_path} is not a valid model card: {err}") from err
    if card is not None and card.preset == UNET_PRESET:
        return _load_unet(state, card, weights)
    config = _config_for(state, card)
    model = _from_config(config, card.preset if card else preset_for(config), card)
    load_state_strict(model, state, str(weights))
    return model


def _load_unet(state: dict[str, torch.Tensor], card: ModelCard, weights: Path) -> torch.nn.Module:
    """The residual U-Net a card with ``preset: "unet"`` describes, with the weights loaded."""
    from .unet import unet_from_config

    try:
        model = unet_from_config(card.config)
    except ValueError as err:
        raise ModelFileError(f"the model card beside {weights} describes no usable U-Net: {err}") from err
    missing, unexpected = model.state_dict().keys() - state.keys(), state.keys() - model.state_dict().keys()
    wrong = [k for k in model.state_dict().keys() & state.keys() if model.state_dict()[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise ModelFileError(
            f"{weights} does not match the U-Net its card describes: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}, wrong shape {sorted(wrong)[:5]}"
        )
    model.load_state_dict(state, strict=True)
    model.card = card
    return model


def _config_for(state: dict[str, torch.Tensor], card: ModelCard | None) -> ModelConfig:
    if card is not None and card.config:
        try:
            return ModelConfig(**{k: v for k, v in card.config.items() if k in ModelConfig.__dataclass_fields__})
        except (TypeError, ValueError) as err:
            raise ModelFileError(f"the model card's config is invalid: {err}") from err
    return infer_config(state)


def load_pth(path: str | Path, preset: str | None = None) -> EMMamba:
    """A TokenUnify ``.pth`` checkpoint as an EMMamba (CPU, eval), with a card describing it."""
    state, meta = read_pth(path)
    inferred = infer_config(state)
    if preset is not None:
        config = get_preset(preset).with_overrides(
            out_channels=inferred.out_channels, in_channels=inferred.in_channels
        )
        name = preset.lower()
    else:
        config = inferred
        name = preset_for(inferred) or "custom"
    training: dict[str, Any] = {"source": str(Path(path).name), "origin": "TokenUnify checkpoint"}
    if "epoch" in meta:
        training["epoch"] = _plain(meta["epoch"])
    args = meta.get("args")
    if args is not None:
        training["args"] = _plain(vars(args) if hasattr(args, "__dict__") else args)
    card = ModelCard(
        preset=name,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        offsets=_default_offsets(config.out_channels),
        patch_size=list(config.patch_size),
        normalization={"low": 0.0, "high": 255.0},
        training=training,
    )
    model = _from_config(config, name, card)
    load_state_strict(model, state, str(path))
    return model.eval()


def _plain(value: Any) -> Any:
    """JSON-safe copy of checkpoint metadata (tensors and odd objects become strings)."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        if isinstance(value, dict):
            return {str(k): _plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [_plain(v) for v in value]
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return value.item()
        return str(value)
