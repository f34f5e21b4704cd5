"""``tokenunify run IN OUT``: predict affinities and segment them in one go (resumable)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cmd_predict import predict_to
from .cmd_segment import segment_to
from .engine_common import (
    TqdmProgress,
    add_cluster_options,
    add_input_options,
    add_predict_options,
    add_segment_options,
    cancel_on_ctrl_c,
    check_output,
    open_affinities,
)


def affinities_path(out: Path) -> Path:
    """``labels.tif`` → ``labels_affinities.zarr`` beside it (kept: a new threshold or a resumed
    run reuses it)."""
    name = out.name
    for suffix in (".ome.zarr", ".zarr", ".tiff", ".tif", ".hdf5", ".h5", ".n5"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out.with_name(f"{name}_affinities.zarr")


def run(args: argparse.Namespace) -> int:
    from ..engine.store import BlockStore, unfinished_blockwise
    from ..progress import Cancelled

    out = check_output(args.output, args.overwrite, resumable=unfinished_blockwise(args.output))
    affs_out = Path(args.affinities_out) if args.affinities_out else affinities_path(out)
    bar = TqdmProgress(not args.quiet)
    with cancel_on_ctrl_c() as token:
        try:
            reuse = (not args.overwrite and affs_out.exists()
                     and _complete(affs_out, BlockStore))
            mismatch = _other_settings(affs_out, args) if reuse else None
            if mismatch:
                raise FileExistsError(
                    f"{affs_out} holds affinities predicted with another {mismatch}; use --overwrite "
                    "to predict them again, or --affinities-out to keep both")
            if reuse:
                print(f"reusing the affinities in {affs_out} (use --overwrite to predict again)",
                      file=sys.stderr)
                affs, voxel = open_affinities(str(affs_out))
                voxel = args.voxel_size or voxel
            else:
                _, affs, voxel = predict_to(_predict_args(args), affs_out, bar, token)
            labels, timings = segment_to(args, affs, voxel, out, bar, token)
        except Cancelled as err:
            bar.close()
            kept = ", ".join(str(p) for p in (affs_out, getattr(err, "kept", None)) if p)
            print(f"cancelled: completed blocks are kept in {kept}; run the same command "
                  "again to resume", file=sys.stderr)
            return 130
    bar.close()
    times = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
    print(f"affinities: {affs_out}")
    print(f"labels {tuple(labels.shape)} ({labels.dtype}) written to {out} ({times})")
    return 0


def _complete(path: Path, store_cls) -> bool:
    try:
        return store_cls.open(path, "affinities", mode="r").complete
    except Exception:  # noqa: BLE001 - not a store of ours: predict_to reports it
        return False


def _other_settings(path: Path, args: argparse.Namespace) -> str | None:
    """What differs between the finished affinities in ``path`` and what this run asks for
    (model, test-time flips), or None when they can be reused."""
    import zarr

    from ..engine.predict import model_id
    from .engine_common import job_tta, load_model_or_default

    settings = zarr.open_group(str(path), mode="r").attrs.get("settings", {})
    diffs = []
    model = load_model_or_default(args.model)[0]
    if settings.get("model") != model_id(model):
        diffs.append("model")
    tta = job_tta(args, model)
    if settings.get("tta", "none") != tta:
        diffs.append(f"test-time flip setting ({settings.get('tta', 'none')}, not {tta})")
    wanted = _wanted_rescale(args, model)
    if (settings.get("rescale") or None) != wanted:
        def said(r):
            return f"resampled by {tuple(r['factors'])}" if r else "not resampled"

        diffs.append(f"voxel size handling (they were {said(settings.get('rescale'))}, "
                     f"this run's would be {said(wanted)})")
    return " and ".join(diffs) or None


def _wanted_rescale(args: argparse.Namespace, model) -> dict | None:
    """The resampling record this run's prediction would write (None: none)."""
    from ..engine.predict import as_3d, card_voxel_size
    from ..engine.resample import plan_rescale
    from .engine_common import open_image

    vol = open_image(args.input, args.dataset, args.voxel_size)
    plan = plan_rescale(card_voxel_size(model), vol.voxel_size, as_3d(vol.data).shape,
                        not getattr(args, "no_rescale", False))
    return plan.to_dict() if plan is not None else None


def _predict_args(args: argparse.Namespace) -> argparse.Namespace:
    ns = argparse.Namespace(**vars(args))
    ns.roi = None
    return ns


def register(sub) -> None:
    p = sub.add_parser("run", help="predict and segment in one go (default model without --model)")
    p.add_argument("input", help="EM image volume")
    p.add_argument("output", help="labels output (.zarr, .ome.zarr, .tif, .h5, .n5)")
    p.add_argument("--affinities-out", metavar="PATH",
                   help="where to keep the affinities (default: OUTPUT_affinities.zarr beside it)")
    add_input_options(p)
    add_predict_options(p)
    add_segment_options(p)
    add_cluster_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
