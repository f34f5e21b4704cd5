"""``tokenunify segment IN OUT``: affinities → neuron labels (waterz or mutex watershed)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from .engine_common import (
    TqdmProgress,
    add_cluster_options,
    add_input_options,
    add_segment_options,
    cancel_on_ctrl_c,
    check_output,
    is_affinity_store,
    open_affinities,
    open_image,
    recommended_scoring,
    recommended_threshold,
    write_output,
)

#: above this many voxels `segment` goes blockwise by itself (None: the engine's in-memory limit)
AUTO_BLOCKWISE_VOXELS: int | None = None


def _affinities_for(args: argparse.Namespace):
    """(affinities, voxel size) from --affinities A (checked against IN) or from IN itself."""
    if args.affinities:
        affs, voxel = open_affinities(args.affinities)
        if args.input:
            image = open_image(args.input, args.dataset, args.voxel_size)
            if tuple(image.shape) != tuple(affs.shape[1:]):
                raise ValueError(
                    f"the affinities {args.affinities} cover {tuple(affs.shape[1:])} but the image "
                    f"{args.input} is {tuple(image.shape)}; give the affinities predicted for it"
                )
            voxel = image.voxel_size or voxel
        return affs, args.voxel_size or voxel
    if is_affinity_store(args.input):
        affs, voxel = open_affinities(args.input)
        return affs, args.voxel_size or voxel
    try:
        affs, voxel = open_affinities(args.input, args.dataset)
    except ValueError as err:
        raise ValueError(
            f"{err}; give the image's affinities with --affinities A, or predict and segment in "
            "one go with `tokenunify run IN OUT`"
        ) from None
    return affs, args.voxel_size or voxel


def segment_to(args: argparse.Namespace, affs, voxel, out: Path, progress, cancel):
    """Segment ``affs`` into ``out`` (any I/O format); returns the labels array."""
    from ..engine.distributed import close_client, get_client
    from ..engine.pipeline import segment
    from ..engine.store import IN_MEMORY_MAX_VOXELS

    blockwise = bool(args.blockwise)
    n_voxels = int(np.prod(affs.shape[1:]))
    limit = AUTO_BLOCKWISE_VOXELS or IN_MEMORY_MAX_VOXELS
    if not blockwise and n_voxels > limit and args.method == "waterz":
        if args.min_size or args.fill_holes:
            raise ValueError(f"the volume has {n_voxels} voxels, too many to segment in memory, "
                             "and cleanup (--min-size/--fill-holes) needs it in memory; leave "
                             "cleanup off (it then runs blockwise)")
        print(f"{n_voxels} voxels: segmenting blockwise (use --blockwise to always do so)",
              file=sys.stderr)
        blockwise = True
    client = get_client(getattr(args, "scheduler", None), getattr(args, "workers", None))
    if client is not None:
        blockwise = True
        import zarr

        if not isinstance(affs, zarr.Array):
            close_client(client)
            raise ValueError("segmenting on a dask cluster needs the affinities in a Zarr store "
                             "(e.g. from `tokenunify predict IN affs.zarr`)")
    name = out.name.lower()
    direct = name.endswith(".zarr") and not name.endswith(".ome.zarr")
    target = out if direct else out.with_name(out.name + ".partial.zarr")
    offsets = _offsets_of(affs) if args.method == "mutex" else None
    threshold = args.threshold
    if threshold is None:
        threshold = recommended_threshold(affs)
        print(f"threshold {threshold:g} (the model card's; set --threshold to change it)",
              file=sys.stderr)
    scoring = args.scoring or recommended_scoring(affs)
    from ..progress import Cancelled

    try:
        result = segment(
            affs, threshold=threshold, method=args.method, scoring=scoring, offsets=offsets,
            blockwise=blockwise,
            block_shape=args.block, context=args.context, anisotropic=args.anisotropic,
            voxel_size=voxel, min_size=args.min_size, fill_holes=args.fill_holes,
            out=target if blockwise else None, overwrite=bool(args.overwrite), client=client,
            progress=progress, cancel=cancel,
        )
    except Cancelled as err:
        if blockwise:  # the finished block tasks stay in the store: the same command resumes
            err.kept = target
        raise
    finally:
        close_client(client)
    labels = result.labels
    if not (blockwise and direct):
        write_output(out, labels, kind="labels", voxel_size=voxel, overwrite=args.overwrite,
                     cancel=cancel)
        if blockwise:
            labels = _reopen(out, labels)
            shutil.rmtree(target, ignore_errors=True)
    return labels, result.timings


def _offsets_of(affs):
    """The offsets recorded by ``predict`` in the store; nearest neighbours for 3 channels."""
    from ..affinities import NEAREST_OFFSETS

    recorded = getattr(affs, "attrs", {}).get("offsets") if hasattr(affs, "attrs") else None
    if recorded is None:
        try:
            import zarr

            store = getattr(affs, "store", None)
            if store is not None:
                recorded = zarr.open_group(store, mode="r").attrs.get("offsets")
        except Exception:  # noqa: BLE001 - not in a group of ours
            recorded = None
    if recorded is not None:
        return [tuple(o) for o in recorded]
    if affs.shape[0] == 3:
        return list(NEAREST_OFFSETS)
    raise ValueError(f"the affinities have {affs.shape[0]} channels but record no offsets; mutex "
                     "watershed needs them (write the affinities with `tokenunify predict`)")


def _reopen(out: Path, labels):
    from ..io import open_volume

    return open_volume(out).data if labels is not None else labels


def run(args: argparse.Namespace) -> int:
    from ..engine.store import unfinished_blockwise
    from ..progress import Cancelled

    out = check_output(args.output, args.overwrite, resumable=unfinished_blockwise(args.output))
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f"--threshold must be in [0, 1], got {args.threshold}")
    affs, voxel = _affinities_for(args)
    bar = TqdmProgress(not args.quiet)
    with cancel_on_ctrl_c() as token:
        try:
            labels, timings = segment_to(args, affs, voxel, out, bar, token)
        except Cancelled as err:
            bar.close()
            kept = getattr(err, "kept", None)
            print("cancelled; " + (f"the finished blocks are kept in {kept}: run the same command "
                                   "again to resume" if kept else "nothing was written"),
                  file=sys.stderr)
            return 130
    bar.close()
    times = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
    print(f"labels {tuple(labels.shape)} ({labels.dtype}) written to {out} ({times})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("segment", help="turn affinities into neuron labels")
    p.add_argument("input", help="affinities (from `tokenunify predict`), or the image with --affinities")
    p.add_argument("output", help="labels output (.zarr, .ome.zarr, .tif, .h5, .n5)")
    p.add_argument("--affinities", metavar="A", help="affinities of the image IN")
    add_input_options(p)
    add_segment_options(p)
    add_cluster_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
