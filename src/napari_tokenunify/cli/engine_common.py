"""Shared pieces of the engine sub-commands (predict, segment, evaluate, run, demo): options,
tqdm progress bars, Ctrl-C → cancel token, model/volume/affinity loading, output writing."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..progress import CancelToken, Progress, format_rate


class TqdmProgress:
    """A progress callback drawing one tqdm bar per stage (a new bar when the message changes)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar = None
        self.message = None

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if (self.bar is not None and p.message == self.message and p.total != self.bar.total
                and p.done >= self.bar.n):
            self.bar.total = p.total  # a time budget moved the end: the same bar, a new length
        if self.bar is None or p.message != self.message or p.total != self.bar.total:
            self.close()
            self.message = p.message
            # no tqdm blocks/s (blocks skipped on resume arrive at once: "60787.01block/s");
            # the rate shown is the library's, with a prefix that fits ("850 voxels/s", not
            # "0.00 Mvoxels/s"), and only once there is one
            self.bar = tqdm(total=p.total, desc=p.message or "working", file=sys.stderr,
                            initial=p.done, dynamic_ncols=True, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} "
                            "[{elapsed}<{remaining}{postfix}]")
        self.bar.n = p.done
        rate = format_rate(p.rate, p.rate_unit)
        if rate:
            self.bar.set_postfix_str(rate, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextlib.contextmanager
def cancel_on_ctrl_c() -> Iterator[CancelToken]:
    """The first Ctrl-C sets the token (the work stops after the current tile, completed blocks
    are kept); a second one interrupts at once."""
    token = CancelToken()
    if threading.current_thread() is not threading.main_thread():
        yield token
        return

    def handler(signum, frame):
        if token.cancelled:
            raise KeyboardInterrupt
        print("\nstopping after the current block (Ctrl-C again to abort now)...", file=sys.stderr)
        token.cancel()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield token
    finally:
        signal.signal(signal.SIGINT, previous)


def add_input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help="dataset/array name inside an HDF5/Zarr/N5 input")
    p.add_argument("--voxel-size", type=_floats, metavar="Z,Y,X",
                   help="voxel size in nm, e.g. 40,4,4 (overrides the file's)")


def add_predict_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="model folder, .safetensors, TokenUnify .pth, or a bundled name "
                        "(default: the bundled 'default' model)")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    p.add_argument("--tile", type=_ints, metavar="Z,Y,X", help="tile shape (default: the model card's)")
    p.add_argument("--halo", type=_ints, metavar="Z,Y,X", help="context kept around each tile core")
    p.add_argument("--batch", type=int, default=None, help="tiles per forward pass")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32", "uint8"],
                   help="affinity storage type")
    p.add_argument("--tta", default=None, choices=["none", "yx", "zyx"],
                   help="test-time augmentation: average each tile over its 4 in-plane (yx) or "
                        "8 (zyx) mirror images; 4 or 8 times slower, usually more accurate "
                        "(default: what the model card recommends, else none)")
    p.add_argument("--no-rescale", action="store_true",
                   help="predict on the data's grid even when its voxel size differs from the "
                        "model card's by more than 15%% (default: resample the input to the "
                        "model's voxel size and map the affinities back)")


def add_cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="dask.distributed scheduler address (tcp://host:8786) or scheduler file")
    p.add_argument("--workers", type=int, metavar="N", help="start a local dask cluster of N processes")


def add_segment_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", type=float, default=None,
                   help="waterz merge threshold (default: the one the model card recommends, "
                        "recorded with the affinities; 0.5 when there is none)")
    p.add_argument("--method", default="waterz", choices=["waterz", "mutex"])
    p.add_argument("--scoring", default=None, choices=["median", "mean"],
                   help="waterz merge score: median or mean affinity of a contact (default: the "
                        "one the model card's threshold was chosen with; median when there is none)")
    p.add_argument("--blockwise", action="store_true", help="segment block by block (large volumes)")
    p.add_argument("--block", type=_ints, default=(64, 256, 256), metavar="Z,Y,X")
    p.add_argument("--context", type=_ints, default=(8, 32, 32), metavar="Z,Y,X")
    p.add_argument("--min-size", type=int, default=0, help="merge segments below this size")
    p.add_argument("--fill-holes", action="store_true", help="fill segments enclosed by one other")
    p.add_argument("--anisotropic", action="store_true", default=None,
                   help="2D fragments per section (default: when z voxels are ≥2× thicker)")


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not Z,Y,X integers (e.g. 16,160,160)") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or min(values) < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be three non-negative integers Z,Y,X")
    return values


def _floats(text: str) -> tuple[float, ...]:
    """A voxel size Z,Y,X in nm (also "40x4x4" or one number for all axes), validated."""
    from ..engine.resample import validate_voxel_size

    parts = [v for v in text.replace("x", ",").replace(" ", ",").split(",") if v]
    try:
        values = tuple(float(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not Z,Y,X numbers (e.g. 40,4,4)") from None
    if len(values) == 1:
        values = values * 3
    try:
        return validate_voxel_size(values)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def check_output(path: str, overwrite: bool, resumable: bool = False) -> Path:
    """Refuse an empty output path, and an existing one unless --overwrite (or resumable)."""
    if not path or not str(path).strip():
        raise ValueError("the output path is empty; give a file name such as out.zarr")
    out = Path(path).expanduser()
    if out.exists() and not overwrite and not resumable:
        raise FileExistsError(f"{out} already exists; use --overwrite to replace it")
    return out


def load_model_or_default(source: str | None, device: str = "cpu"):
    """The model from ``source``; without one the bundled default, and when that is not
    installed a freshly built ``tiny`` model (random weights) with a clear warning."""
    from ..model import build_model, load_model

    if source:
        return load_model(source, device=device), source
    try:
        return load_model("default", device=device), "default"
    except FileNotFoundError as err:
        print(f"warning: {err}\nwarning: falling back to a freshly built 'tiny' model with random "
              "weights: the pipeline runs end to end but the segmentation is not meaningful.",
              file=sys.stderr)
        model = build_model("tiny").eval()
        return model, None


def open_image(path: str, dataset: str | None = None, voxel_size=None):
    """Open a volume lazily; in a labels store written by ``segment --blockwise`` (which also
    keeps its fragments) the ``labels`` array is the default."""
    from ..engine.store import is_store
    from ..io import open_volume

    if dataset is None and is_store(path, "labels"):
        dataset = "labels"
    return open_volume(path, dataset=dataset, voxel_size=voxel_size, allow_2d=True)


def is_affinity_store(path: str | Path) -> bool:
    from ..engine.predict import ARRAY_NAME
    from ..engine.store import is_store

    return is_store(path, ARRAY_NAME)


def open_affinities(path: str, dataset: str | None = None):
    """Affinities (C, Z, Y, X) as a lazy array: a store written by ``predict`` (zarr group), or
    any 4D array the I/O layer reads (channels first)."""
    import dask.array as da

    from ..engine.predict import ARRAY_NAME
    from ..io import open_volume

    if dataset is None and is_affinity_store(path):
        import zarr

        group = zarr.open_group(str(path), mode="r")
        if not group.attrs.get("complete", False):
            raise ValueError(f"{path} is an unfinished prediction; run `tokenunify predict` "
                             "again with the same arguments to finish it")
        return group[ARRAY_NAME], group.attrs.get("voxel_size")
    try:
        first = open_volume(path, dataset=dataset, channel=0)
    except ValueError as err:
        raise ValueError(f"{path} is not an affinity volume ({err})") from None
    n = first.metadata.get("stored_shape", (None,))[0]
    if not isinstance(n, int) or len(first.metadata.get("stored_shape", ())) != 4:
        raise ValueError(f"stored shape {first.metadata.get('stored_shape')}, not 4D channels-first")
    chans = [first.data] + [open_volume(path, dataset=dataset, channel=c).data for c in range(1, n)]
    return da.stack(chans), first.voxel_size


def write_output(path: Path, array: Any, *, kind: str, voxel_size=None, overwrite: bool = False,
                 progress=None, cancel=None) -> Path:
    from ..io import write_volume

    return write_volume(path, array, kind=kind, voxel_size=voxel_size, overwrite=overwrite,
                        progress=progress, cancel=cancel)


def print_metrics(metrics: dict[str, float]) -> None:
    print(f"VOI split {metrics['voi_split']:.4f}  merge {metrics['voi_merge']:.4f}  "
          f"total {metrics['voi']:.4f}  ARAND {metrics['arand']:.4f}  "
          f"({metrics['n_voxels']} voxels)")


def job_tta(args: argparse.Namespace, model) -> str:
    """--tta, or the test-time flips the model's card recommends when it is not given."""
    given = getattr(args, "tta", None)
    if given is not None:
        return given
    card = getattr(model, "card", None)
    tta = card.recommended_tta if card is not None else "none"
    if tta != "none" and not getattr(args, "_told_tta", False):
        from ..engine.tta import TTA_LABELS

        print(f"test-time flips: {TTA_LABELS[tta]}, as the model card recommends "
              "(--tta none predicts once per tile, faster)", file=sys.stderr)
        args._told_tta = True
    return tta


def job_rescale(args: argparse.Namespace, model, voxel_size, shape):
    """The resampling to the model's voxel size this job does (``None``: none), told once on
    stderr; a voxel size that cannot be used raises ``ValueError`` saying what to pass."""
    from ..engine.predict import card_voxel_size
    from ..engine.resample import plan_rescale

    plan = plan_rescale(card_voxel_size(model), voxel_size, shape,
                        not getattr(args, "no_rescale", False))
    if plan is not None and not getattr(args, "_told_rescale", False):
        print(f"voxel size: {plan.message()}", file=sys.stderr)
        args._told_rescale = True
    return plan


def store_card(affs):
    """The card of the model that predicted ``affs`` (recorded in the affinity store's settings
    by ``predict``), or None for affinities from elsewhere."""
    from ..model.card import ModelCard

    try:
        import zarr

        settings = zarr.open_group(affs.store, mode="r").attrs.get("settings", {})
        return ModelCard.from_json(settings["model"])
    except Exception:  # noqa: BLE001 - affinities from elsewhere carry no card
        return None


def recommended_threshold(affs) -> float:
    """The threshold the card of the model that predicted ``affs`` recommends, or 0.5."""
    card = store_card(affs)
    return card.recommended_threshold if card is not None else 0.5


def recommended_scoring(affs) -> str:
    """The agglomeration scoring that card's threshold was chosen with, or "median"."""
    card = store_card(affs)
    return card.recommended_scoring if card is not None else "median"
