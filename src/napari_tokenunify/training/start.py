"""The network finetuning starts from: a copy of the caller's model (or a fresh one), the
weights that carry over, and what the new card says about where it came from.

Weight carry-over from pretraining: the pretrained network has one output channel (the
reconstruction); :func:`transfer_weights` copies every parameter whose name and shape match into
the affinity network, i.e. everything except the final 1×1×1 output convolution.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def transfer_weights(source: torch.nn.Module, target: torch.nn.Module) -> dict[str, list[str]]:
    """Copy parameters/buffers with equal names and shapes from ``source`` into ``target``.

    Returns ``{"copied": [...], "skipped": [...]}`` (skipped: missing in the source or of another
    shape, e.g. the output convolution when the channel count changes).
    """
    src = source.state_dict()
    dst = target.state_dict()
    copied, skipped = [], []
    for name, value in dst.items():
        if name in src and tuple(src[name].shape) == tuple(value.shape):
            dst[name] = src[name].detach().clone().to(value.dtype)
            copied.append(name)
        else:
            skipped.append(name)
    target.load_state_dict(dst)
    return {"copied": copied, "skipped": skipped}



def _out_channels(model: torch.nn.Module) -> int | None:
    card = getattr(model, "card", None)
    if card is not None and getattr(card, "out_channels", None):
        return int(card.out_channels)
    cfg = getattr(model, "config", None)
    if isinstance(cfg, dict) and "out_channels" in cfg:
        return int(cfg["out_channels"])
    return None



def _offset_list(offsets) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in o) for o in (offsets or [])]



def _carry_head_rows(source: torch.nn.Module, target: torch.nn.Module, rows: int) -> list[str]:
    """Copy the first ``rows`` output channels of ``source``'s output convolution into
    ``target``'s (same layer names, shapes equal but for the channel axis)."""
    src, dst = source.state_dict(), target.state_dict()
    done = []
    for name in dst:
        if not name.startswith("out.") or name not in src:
            continue
        a, b = src[name], dst[name]
        if a.shape[1:] == b.shape[1:] and min(a.shape[0], b.shape[0]) >= rows:
            b[:rows] = a[:rows].detach().to(b.dtype)
            done.append(name)
    target.load_state_dict(dst)
    return done



def keep_output_channels(model: torch.nn.Module, n: int = 3) -> torch.nn.Module:
    """A copy of an EMMamba affinity model that predicts only its first ``n`` channels.

    Auxiliary outputs (e.g. long-range affinities trained beside the nearest-neighbour ones) help
    training only; the shipped contract is the three nearest-neighbour affinities waterz uses,
    so a model is cut back to them before it is bundled. Weights of the kept channels are exact.
    """
    from dataclasses import replace

    from ..model import build_model

    card = getattr(model, "card", None)
    preset = getattr(card, "preset", None) or "tiny"
    have = _out_channels(model)
    if have is None or n > have:
        raise ValueError(f"the model has {have} output channels; cannot keep {n}")
    target = build_model(preset, out_channels=n)
    report = transfer_weights(model, target)
    carried = _carry_head_rows(model, target, n)
    missing = set(report["skipped"]) - set(carried)
    if missing:
        raise ValueError(f"cannot cut the model to {n} channels: {sorted(missing)} do not carry over")
    if card is not None:
        target.card = replace(card, out_channels=n, offsets=[list(o) for o in card.offsets[:n]],
                              config=dict(target.card.config))
    return target



def prepare_model(
    init: Any, n_channels: int, preset: str = "tiny", offsets: Sequence[Sequence[int]] | None = None,
) -> tuple[torch.nn.Module, dict]:
    """The network to finetune (never the caller's object: a copy) and a note of what carried over.

    When the start is an affinity model whose offsets begin ``offsets`` (e.g. the three nearest
    ones, with long-range ones added for training), its output channels carry over to those
    offsets and only the new channels start fresh.

    ``note["started_from"]`` describes the start for the new card: its name, the SHA-256 of its
    weights (:func:`~napari_tokenunify.model.files.weights_sha256`), the file it was read from
    and its own training record.
    """
    if init is None or init == "scratch":
        from ..model import build_model

        model = build_model(preset, out_channels=n_channels)
        return model, {"init": "scratch", "started_from": {"name": "scratch", "preset": preset}}
    if isinstance(init, torch.nn.Module):
        source, name = copy.deepcopy(init), type(init).__name__
        path = getattr(init, "source_path", None)
    else:
        from ..model import load_model

        source, name = load_model(str(init), device="cpu"), str(init)
        path = getattr(source, "source_path", None) or str(init)
        card = getattr(source, "card", None)
        if card is not None:
            preset = getattr(card, "preset", preset) or preset
    source.source_path = None  # the copy is a new model: it comes from no file yet
    start = start_record(source, path)
    if _out_channels(source) in (None, n_channels):
        return source, {"init": name, "copied": "all", "started_from": start}
    if type(source).__name__ != "EMMamba":  # a grown EMmamba would silently replace, e.g., a U-Net
        raise ValueError(
            f"cannot change the output channels of {name} ({type(source).__name__}, "
            f"{_out_channels(source)} → {n_channels}): auxiliary offsets and shape descriptors "
            "are trained as extra outputs of EMmamba models only; finetune this model without "
            "them (its own offsets, lsd_sigma 0)"
        )
    from ..model import build_model

    target = build_model(preset, out_channels=n_channels)
    report = transfer_weights(source, target)
    src_offsets = _offset_list(getattr(getattr(source, "card", None), "offsets", None))
    if offsets is not None and src_offsets and _offset_list(offsets)[: len(src_offsets)] == src_offsets:
        carried = _carry_head_rows(source, target, len(src_offsets))
        report["skipped"] = [k for k in report["skipped"] if k not in carried]
        report["copied"] += carried
    src_norm = getattr(getattr(source, "card", None), "normalization", None)
    if src_norm is not None and getattr(target, "card", None) is not None:
        from dataclasses import replace

        target.card = replace(target.card, normalization=src_norm)  # as the source was trained
    if offsets is not None and getattr(target, "card", None) is not None:
        from dataclasses import replace

        target.card = replace(target.card, offsets=[list(o) for o in _offset_list(offsets)])
        src_card = getattr(source, "card", None)
        if src_card is not None and "segmentation_scoring" in (src_card.training or {}):
            # the start's own channels carried over: validation segments them as the start's
            # card says (a mean-scored default was otherwise validated with the median)
            target.card = replace(target.card, training={
                "segmentation_scoring": src_card.training["segmentation_scoring"]})
    return target, {"init": name, "copied": len(report["copied"]), "reinitialised": report["skipped"],
                    "started_from": start}



def start_name(model: Any, path: Any = None) -> str:
    """A short name for a model: its card's name, else its file's, preset or class name."""
    card = getattr(model, "card", None)
    if card is not None and getattr(card, "name", ""):
        return str(card.name)
    if path:
        p = Path(str(path))
        return p.stem if p.suffix in (".safetensors", ".pth", ".pt") else p.name
    if card is not None and getattr(card, "preset", ""):
        return str(card.preset)
    return type(model).__name__.lower()



#: generations of a lineage whose whole training records a card keeps; the start beyond keeps its
#: name, weights hash, source and description and the names and hashes of those before it (each
#: finetuning nested its start's record in full, so a card grew with every generation: the
#: session-20 candidate's was 223 KB)
LINEAGE_DEPTH = 3
_LINEAGE_KEYS = ("started_from", "continued_from")
_KEPT_WHEN_TRIMMED = ("name", "weights_sha256", "source", "description", "preset")


def trim_lineage(training: dict[str, Any], depth: int = LINEAGE_DEPTH) -> dict[str, Any]:
    """``training`` with the starts nested in it kept whole for ``depth`` generations; beyond,
    a start keeps who it was (name, weights hash, source, description) and the names and hashes
    of the starts before it (``earlier``), so the chain of hashes stays complete while the old
    runs' details stay in the older models' own cards."""
    out = dict(training)
    for key in _LINEAGE_KEYS:
        start = out.get(key)
        if not isinstance(start, dict):
            continue
        if "trimmed" in start:  # trimmed before (a card of a card): as it is
            continue
        if depth <= 0:
            out[key] = {**{k: start[k] for k in _KEPT_WHEN_TRIMMED if k in start},
                        "earlier": _earlier(start),
                        "trimmed": "its training record is left out here (see that model's own card)"}
            continue
        inner = dict(start)
        if isinstance(inner.get("training"), dict):
            inner["training"] = trim_lineage(inner["training"], depth - 1)
        out[key] = trim_lineage(inner, depth - 1) if key == "continued_from" else inner
    return out


def _earlier(start: dict[str, Any]) -> list[dict[str, Any]]:
    """Name and weights hash of every start before ``start`` (nearest first)."""
    chain: list[dict[str, Any]] = []
    node = start
    while True:
        training = node.get("training") if isinstance(node.get("training"), dict) else node
        nxt = training.get("started_from")
        if not isinstance(nxt, dict):
            nxt = training.get("continued_from")
        if not isinstance(nxt, dict) or len(chain) > 100:
            return chain
        chain.append({k: nxt[k] for k in ("name", "weights_sha256") if k in nxt})
        chain.extend(nxt.get("earlier", []))
        if "earlier" in nxt:
            return chain
        node = nxt


def start_record(model: torch.nn.Module, path: Any = None) -> dict[str, Any]:
    """What a finetuned card says about the model it started from (its own lineage trimmed to
    :data:`LINEAGE_DEPTH` generations)."""
    from ..model.files import weights_sha256

    card = getattr(model, "card", None)
    record: dict[str, Any] = {"name": start_name(model, path), "weights_sha256": weights_sha256(model)}
    if path:
        from ..model.bundled import portable_source

        record["source"] = portable_source(path)
    if card is not None:
        record["preset"] = card.preset
        if getattr(card, "description", ""):
            record["description"] = card.description
        record["segmentation_threshold"] = card.recommended_threshold
        if card.training:
            record["training"] = trim_lineage({k: v for k, v in card.training.items() if k != "_extra"})
    return record



def default_name(start: str, date: datetime.date | None = None, tag: str | None = None) -> str:
    """``<start>-ft-<date>`` (``<start>-ft-<tag>-<date>`` with a tag, e.g. the widget's layer)."""
    import re

    day = (date or datetime.date.today()).isoformat()
    parts = [start, "ft", *([tag] if tag else []), day]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts)).strip("_")



def card_normalization(model: torch.nn.Module, normalization: Any, is_new: bool) -> Any:
    """The normalisation to train with, written into the card of the network in training (its
    validation predicts with it, and the exported card records it)."""
    from dataclasses import replace

    from ..engine.normalize import ROBUST_NORMALIZATION

    card = getattr(model, "card", None)
    if normalization is None:
        current = getattr(card, "normalization", None)
        normalization = dict(ROBUST_NORMALIZATION) if is_new or card is None or not current else current
    if card is not None:
        model.card = replace(card, normalization=normalization)
    return normalization



def set_card_patch(model: torch.nn.Module, patch_shape: Sequence[int]) -> None:
    """Give the network in training the card patch size it will be exported with: prediction
    tiles follow it, and EMmamba's output depends on the tile, so validation must use the same."""
    from dataclasses import replace

    card = getattr(model, "card", None)
    if card is not None and list(getattr(card, "patch_size", None) or []) != list(patch_shape):
        model.card = replace(card, patch_size=list(patch_shape))



def head_parameters(model: torch.nn.Module, init_note: dict, head_steps: int) -> set[str]:
    """Names of the re-initialised parameters trained alone during the first ``head_steps``."""
    if not head_steps:
        return set()
    if int(head_steps) < 0:
        raise ValueError(f"head_steps must be 0 or more, got {head_steps}")
    fresh = set(init_note.get("reinitialised") or ())
    names = {n for n, _ in model.named_parameters() if n in fresh}
    if not names:
        raise ValueError(
            "head_steps needs a pretrained init whose output layer is re-initialised (a model with "
            f"another number of output channels); this init re-initialises nothing ({init_note.get('init')})"
        )
    return names



def freeze_all_but(model: torch.nn.Module, names: set[str] | None) -> None:
    """Train only the parameters in ``names`` (all of them when ``names`` is None)."""
    for n, p in model.named_parameters():
        p.requires_grad_(names is None or n in names)



def ema_model(model: torch.nn.Module, decay: float | None):
    """A torch ``AveragedModel`` keeping the exponential moving average of ``model``'s weights."""
    if decay is None:
        return None
    if not 0.0 < float(decay) < 1.0:
        raise ValueError(f"ema must be a decay between 0 and 1 (e.g. 0.999), got {decay}")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(decay)), use_buffers=True)
