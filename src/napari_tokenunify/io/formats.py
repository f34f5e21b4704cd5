"""Which reader handles a path: by suffix, by the metadata files of a folder, or by magic bytes."""

from __future__ import annotations

from pathlib import Path

from .read_slices import SLICE_SUFFIXES
from .volume import VolumeError, VolumeNotFoundError

SUPPORTED = (
    "TIFF (.tif/.tiff, multi-page or BigTIFF), Zarr v2/v3 and OME-Zarr (.zarr), HDF5 (.h5/.hdf5), "
    "N5 (.n5), a folder of 2D PNG/TIFF/JPEG slices, or a single 2D PNG/JPEG with allow_2d=True"
)
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def detect_format(path: Path) -> str:
    """One of ``tiff``, ``zarr``, ``hdf5``, ``n5``, ``slices``, ``image``; errors otherwise."""
    if not path.exists():
        raise VolumeNotFoundError(f"{path}: no such file or folder; check the path.")
    name = path.name.lower()
    if path.is_dir():
        if name.endswith(".zarr") or any(
            (path / m).exists() for m in ("zarr.json", ".zarray", ".zgroup", ".zattrs")
        ):
            return "zarr"
        if name.endswith(".n5") or (path / "attributes.json").exists():
            return "n5"
        if any(p.suffix.lower() in SLICE_SUFFIXES for p in path.iterdir()):
            return "slices"
        raise VolumeError(
            f"{path}: this folder is not a Zarr/N5 container and holds no image slices. "
            f"Supported: {SUPPORTED}."
        )
    if name.endswith(TIFF_SUFFIXES):
        return "tiff"
    if name.endswith(HDF5_SUFFIXES):
        return "hdf5"
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        return "image"
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if head[:4] in TIFF_MAGIC:
        return "tiff"
    raise VolumeError(
        f"{path}: unsupported file format ({path.suffix or 'no suffix'}). Supported: {SUPPORTED}."
    )


def base_name(path: Path) -> str:
    """The file name without its format suffix ('cells.ome.zarr' -> 'cells', 'a.b.h5' -> 'a.b')."""
    name = path.name
    for double in (".ome.zarr", ".ome.tif", ".ome.tiff"):
        if name.lower().endswith(double):
            return name[: -len(double)] or name
    return Path(name).stem or name
