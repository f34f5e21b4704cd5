"""``tokenunify predict IN OUT``: tiled affinity prediction, resumable after Ctrl-C."""

from __future__ import annotations

import argparse
import shutil
import sys
import warnings
from pathlib import Path

from .engine_common import (
    TqdmProgress,
    add_cluster_options,
    add_input_options,
    add_predict_options,
    cancel_on_ctrl_c,
    check_output,
    job_rescale,
    job_tta,
    load_model_or_default,
    open_image,
    write_output,
)


def work_store(out: Path) -> tuple[Path, bool]:
    """Where blocks are written: OUT itself for .zarr, else a resumable OUT.partial.zarr."""
    name = out.name.lower()
    if name.endswith(".zarr") and not name.endswith(".ome.zarr"):
        return out, True
    return out.with_name(out.name + ".partial.zarr"), False


def predict_to(args: argparse.Namespace, out: Path, progress, cancel):
    """Predict IN into ``out`` (any I/O format); returns (path, affinities array, voxel size)."""
    from ..engine.predict import RescaleWarning, as_3d, predict_affinities
    from ..engine.tiling import parse_box

    vol = open_image(args.input, args.dataset, args.voxel_size)
    check_output(str(out), args.overwrite, resumable=True)
    store, direct = work_store(out)
    if not direct and out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists; use --overwrite to replace it")
    model, source = load_model_or_default(args.model)
    crop = parse_box(args.roi, vol.shape) if getattr(args, "roi", None) else None
    rescale = not getattr(args, "no_rescale", False)
    job_rescale(args, model, vol.voxel_size, as_3d(vol.data).shape)  # says so, or refuses
    common = dict(tile_shape=args.tile, halo=args.halo, batch_size=args.batch, device=args.device,
                  dtype=args.dtype, crop=crop, voxel_size=vol.voxel_size,
                  overwrite=args.overwrite, progress=progress, cancel=cancel,
                  tta=job_tta(args, model), rescale=rescale)
    from ..engine.distributed import close_client, get_client

    client = get_client(args.scheduler, args.workers)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RescaleWarning)  # job_rescale said so already
            if client is not None:
                from ..engine.distributed import VolumeRef, predict_affinities_distributed

                affs = predict_affinities_distributed(
                    VolumeRef(str(vol.path), vol.dataset), model, store, client=client,
                    model_source=source, **common)
            else:
                affs = predict_affinities(vol.data, model, out=store, **common)
    finally:
        close_client(client)
    if not direct:
        write_output(out, affs, kind="affinities", voxel_size=vol.voxel_size,
                     overwrite=args.overwrite, cancel=cancel)
        shutil.rmtree(store, ignore_errors=True)
    return out, affs, vol.voxel_size


def run(args: argparse.Namespace) -> int:
    from ..progress import Cancelled

    bar = TqdmProgress(not args.quiet)
    out = check_output(args.output, args.overwrite, resumable=True)
    with cancel_on_ctrl_c() as token:
        try:
            path, affs, _ = predict_to(args, out, bar, token)
        except Cancelled:
            bar.close()
            print(f"cancelled: the completed blocks are kept in {work_store(out)[0]}; run the same "
                  "command again to resume", file=sys.stderr)
            return 130
    bar.close()
    print(f"affinities {tuple(affs.shape)} written to {path}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="EM image volume (TIFF, Zarr, OME-Zarr, HDF5, N5, slice folder)")
    p.add_argument("output", help="affinities output (.zarr is written block by block and resumable)")
    add_input_options(p)
    add_predict_options(p)
    p.add_argument("--roi", metavar="Z0:Z1,Y0:Y1,X0:X1", help="predict only this region")
    add_cluster_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub) -> None:
    p = sub.add_parser("predict", help="predict affinities tile by tile (resumable)")
    add_arguments(p)
    p.set_defaults(func=run)
