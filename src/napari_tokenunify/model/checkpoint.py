"""Safe reading of TokenUnify ``.pth`` checkpoints and reports of state_dict mismatches.

Checkpoints are read with ``torch.load(weights_only=True)``: only tensors, containers and
primitive values unpickle, plus the few harmless classes TokenUnify's training scripts put
there (``argparse.Namespace`` for ``args``, ``pathlib`` paths). Anything else is refused.
"""

from __future__ import annotations

import argparse
import pathlib
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .presets import PRESETS, ModelConfig

SAFE_GLOBALS: list[Any] = [
    argparse.Namespace,
    pathlib.PurePath,
    pathlib.PurePosixPath,
    pathlib.PureWindowsPath,
    pathlib.PosixPath,
    pathlib.WindowsPath,
]
_STATE_KEYS = ("model", "state_dict", "model_state_dict", "model_state", "net", "network")


class ModelFileError(ValueError):
    """A model file that cannot be used (corrupt, unsafe, wrong layout); the message says why."""


@dataclass
class MismatchReport:
    """How a state_dict differs from a network's."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    fitting_preset: str | None = None

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def describe(self, limit: int = 12) -> str:
        def head(items: list[str]) -> str:
            more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        lines = []
        if self.missing:
            lines.append(f"missing keys ({len(self.missing)}): {head(self.missing)}")
        if self.unexpected:
            lines.append(f"unexpected keys ({len(self.unexpected)}): {head(self.unexpected)}")
        if self.wrong_shape:
            shown = [f"{k} {tuple(a)} in file vs {tuple(b)} in model" for k, a, b in self.wrong_shape]
            lines.append(f"wrong shapes ({len(shown)}): {head(shown)}")
        if self.fitting_preset:
            lines.append(f"the checkpoint fits preset {self.fitting_preset!r}")
        elif not self.ok:
            lines.append("no built-in preset fits this checkpoint")
        return "; ".join(lines) if lines else "state_dict matches"


def read_pth(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a TokenUnify-style checkpoint safely; returns (state_dict, other entries).

    Accepts a bare state_dict, ``{'model': sd, 'optimizer', 'epoch', 'scaler', 'args'}`` (also
    ``state_dict``/``model_state_dict``) and strips a DataParallel ``module.`` prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        msg = str(err)
        found = re.search(r"GLOBAL ([\w.]+)", msg)
        what = f" (it contains {found.group(1)})" if found else ""
        raise ModelFileError(
            f"{path} holds Python objects that are not safe to load{what}; only tensors and plain "
            "values are accepted. Re-save just the weights (torch.save(model.state_dict(), ...)) "
            "in a trusted environment, then convert that file."
        ) from err
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise ModelFileError(
            f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {err}); "
            "the file may be truncated or corrupt: download or copy it again"
        ) from err
    return split_checkpoint(obj, str(path))


def split_checkpoint(obj: Any, where: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict without ``module.`` prefixes, the other top-level entries)."""
    if not isinstance(obj, Mapping):
        raise ModelFileError(f"{where} holds a {type(obj).__name__}, not a state_dict or a dict with 'model'")
    meta: dict[str, Any] = {}
    sd: Any = obj
    if not _is_state_dict(obj):
        for key in _STATE_KEYS:
            if key in obj and _is_state_dict(obj[key]):
                sd = obj[key]
                meta = {k: v for k, v in obj.items() if k != key}
                break
        else:
            raise ModelFileError(
                f"{where} has no state_dict: expected tensors, or one of the entries "
                f"{', '.join(_STATE_KEYS)}; found entries {', '.join(map(str, list(obj)[:10]))}"
            )
    state = {}
    for k, v in sd.items():
        name = str(k)
        while name.startswith("module."):
            name = name[len("module.") :]
        state[name] = v
    return state, meta


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def infer_config(state: Mapping[str, torch.Tensor]) -> ModelConfig:
    """The EMMamba architecture a state_dict was made by (from its key names and shapes)."""
    try:
        stem = state["vit.downsample_layers.0.0.weight"]
        dims = [int(stem.shape[0])] + [
            int(state[f"vit.downsample_layers.{i}.1.weight"].shape[0]) for i in (1, 2, 3)
        ]
        depths = []
        for i in range(4):
            js = {int(m.group(1)) for k in state if (m := re.match(rf"vit\.stages\.{i}\.(\d+)\.", k))}
            depths.append(len(js))
        mix = "vit.stages.0.0.mamba."
        in_proj = state[mix + "in_proj.weight"]
        enc5 = state["encoder5.layer.conv1.conv.weight"]
        return ModelConfig(
            in_channels=int(stem.shape[1]),
            out_channels=int(state["out.conv.conv.weight"].shape[0]),
            depths=tuple(depths),
            feature_sizes=tuple(dims),
            hidden_size=int(enc5.shape[0]),
            kernel_size=tuple(int(s) for s in enc5.shape[2:]),
            d_state=int(state[mix + "A_log"].shape[1]),
            d_conv=int(state[mix + "conv1d.weight"].shape[-1]),
            expand=int(in_proj.shape[0]) // (2 * int(in_proj.shape[1])),
        )
    except (KeyError, IndexError, ValueError) as err:
        raise ModelFileError(
            f"this state_dict is not an EMmamba (SegMamba) network: {err!s} not found or malformed"
        ) from err


def preset_for(config: ModelConfig) -> str | None:
    """Name of the preset with this architecture (channels aside), or None."""
    for name, p in PRESETS.items():
        same = (
            p.depths == config.depths
            and p.feature_sizes == config.feature_sizes
            and p.hidden_size == config.hidden_size
            and p.kernel_size == config.kernel_size
            and p.d_state == config.d_state
            and p.d_conv == config.d_conv
            and p.expand == config.expand
        )
        if same:
            return name
    return None


def compare_state(
    state: Mapping[str, torch.Tensor], model: torch.nn.Module
) -> MismatchReport:
    """Which keys of ``state`` are missing, unexpected or of the wrong shape for ``model``."""
    own = model.state_dict()
    report = MismatchReport(
        missing=sorted(k for k in own if k not in state),
        unexpected=sorted(k for k in state if k not in own),
        wrong_shape=sorted(
            (k, tuple(state[k].shape), tuple(own[k].shape))
            for k in own
            if k in state and tuple(state[k].shape) != tuple(own[k].shape)
        ),
    )
    if not report.ok:
        try:
            report.fitting_preset = preset_for(infer_config(state))
        except ModelFileError:
            report.fitting_preset = None
    return report


def load_state_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], where: str = "checkpoint") -> None:
    """``model.load_state_dict(state, strict=True)`` with a readable error on mismatch."""
    report = compare_state(state, model)
    if not report.ok:
        raise ModelFileError(f"{where} does not match the network: {report.describe()}")
    model.load_state_dict(state, strict=True)
