"""npe2 reader, writer and sample-data contributions (thin wrappers over ``napari_tokenunify.io``).

Readers return lazy (dask) layers with ``scale`` = voxel size, and ``None`` for paths they
cannot read, so napari can try other readers; for files only this plugin would open (HDF5, N5,
Zarr that is not a 2D image) they return a reader that raises with the reason, which napari then
shows in its notification every time (a warning would be shown once). Large volumes (over 2 GiB,
or an axis over 4096 voxels: ``io.pyramid.is_large``) open as multiscale layers: their own
OME-Zarr pyramid, else a lazy nearest-neighbour one, so napari reads only the visible tile of
one level. Nothing here imports Qt; napari itself is not
needed either (layer data tuples are plain tuples).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .io import Volume, VolumeError, open_volume, write_volume
from .io.formats import base_name, detect_format
from .io.pyramid import is_large, lazy_pyramid
from .io.read_hdf5 import list_hdf5_datasets
from .io.read_n5 import list_n5_datasets

LayerData = tuple[Any, dict, str]
MAX_LAYERS = 16
LABEL_HINTS = ("label", "seg", "gt", "groundtruth", "ground_truth", "ids", "neuron")


def guess_layer_type(volume: Volume) -> str:
    """``labels`` or ``image``: the file's own ``kind`` if it says, else dtype and name hints."""
    kind = volume.metadata.get("kind")
    if kind in ("labels", "image"):
        return kind
    if kind == "affinities":
        return "image"
    dtype = np.dtype(volume.dtype)
    if dtype.kind not in "iu":
        return "image"
    name = f"{volume.dataset or ''} {volume.path.name}".lower()
    if dtype.itemsize >= 4 or any(h in name for h in LABEL_HINTS):
        return "labels"
    return "image"


def native_reader(volume: Volume) -> Any | None:
    """The zarr array behind a Zarr volume's dask array, when the volume is that array as it is
    (no axes moved): the coarse levels of a lazy pyramid read through it, ~6x faster than through
    dask (a coarse section touches every chunk of a section; dask adds ~1 ms per chunk)."""
    meta = volume.metadata
    if meta.get("format") not in ("zarr", "ome-zarr"):
        return None
    if tuple(meta.get("stored_shape") or ()) != tuple(volume.shape):
        return None
    try:
        import zarr

        from .io.sources import ZarrSource

        node = zarr.open(store=str(volume.path), mode="r")
        if volume.dataset:
            node = node[volume.dataset.strip("/")]
        if isinstance(node, zarr.Group):
            node = node[(meta.get("level_paths") or ["0"])[int(meta.get("level") or 0)]]
        if tuple(node.shape) != tuple(volume.shape):
            return None
        return ZarrSource(node, str(volume.path))  # a damaged chunk names the file
    except Exception:  # noqa: BLE001 - dask reads it then
        return None


def _layer(volume: Volume, data: Any = None, *, multiscale: bool = False) -> LayerData:
    """One layer tuple; a large volume (``io.pyramid.is_large``) without a pyramid of its own
    gets a lazy nearest-neighbour one, so napari reads only the visible tile of one level."""
    layer_type = guess_layer_type(volume)
    if data is None and not multiscale and is_large(volume.shape, volume.dtype):
        data = lazy_pyramid(volume.data, volume.voxel_size, reader=native_reader(volume))
        multiscale = True
    name = base_name(volume.path)
    if volume.dataset:
        name = f"{name}/{volume.dataset}"
    kwargs: dict[str, Any] = {
        "name": name,
        "metadata": {
            "path": str(volume.path),
            "dataset": volume.dataset,
            "voxel_size": volume.voxel_size,
            "format": volume.metadata.get("format"),
        },
    }
    if volume.voxel_size is not None:
        kwargs["scale"] = tuple(float(v) for v in volume.voxel_size)
    if multiscale:
        kwargs["multiscale"] = True
    if layer_type == "image":
        if volume.dtype == np.uint8:
            kwargs["contrast_limits"] = (0, 255)  # napari need not scan the data for a range
        kwargs["colormap"] = "gray"
    return (volume.data if data is None else data, kwargs, layer_type)


def _ome_layers(path: Path, dataset: str | None) -> list[LayerData]:
    from .io.read_zarr import zarr_level_arrays

    volume = open_volume(path, dataset=dataset)
    meta = volume.metadata
    levels = meta.get("level_paths") or ["0"]
    if len(levels) > 1:
        arrays = zarr_level_arrays(path, dataset, levels)
        if all(a.ndim == 3 for a in arrays):
            layers = [_layer(volume, arrays, multiscale=True)]
        else:
            layers = [_layer(volume)]
    else:
        layers = [_layer(volume)]
    for label in meta.get("labels") or []:
        sub = f"{dataset.strip('/') + '/' if dataset else ''}labels/{label}"
        layers.extend(_ome_layers(path, sub))
    return layers


AFFINITY_HINTS = ("affin", "aff")
MAX_AFFINITY_CHANNELS = 16


def block_store_kind(path: Path) -> str | None:
    """``affinities``/``labels`` for a store written block by block (``engine.store``: the
    result array plus a ``done`` array of per-block bookkeeping), else ``None``."""
    if not path.is_dir():
        return None
    try:
        import zarr

        group = zarr.open_group(str(path), mode="r")
        names = set(group.array_keys())
    except Exception:  # noqa: BLE001 - not a zarr group
        return None
    if "done" not in names:
        return None
    return next((k for k in ("affinities", "labels") if k in names), None)


def affinity_layer(path: Path, dataset: str | None = None, *, store: bool = False) -> LayerData | None:
    """A (channels, z, y, x) affinity map as one 4D image layer (what Predict shows and Segment
    and Proofread pick up), or ``None`` when the array is not one."""
    from .io.open import read_raw

    try:
        raw = read_raw(path, detect_format(path), dataset, 0)
    except VolumeError:
        return None
    data, kind = raw.data, raw.metadata.get("kind")
    hint = f"{raw.dataset or ''} {path.name}".lower()
    if data.ndim != 4 or not (kind == "affinities" or any(h in hint for h in AFFINITY_HINTS)):
        return None
    if not 1 <= data.shape[0] <= MAX_AFFINITY_CHANNELS:
        return None
    voxel = raw.voxel_size
    if voxel is None and store:
        import zarr

        voxel = zarr.open_group(str(path), mode="r").attrs.get("voxel_size")
    name = base_name(path) + (f"/{raw.dataset}" if raw.dataset and not store else "")
    kwargs: dict[str, Any] = {
        "name": f"{name} affinities" if "aff" not in name.lower() else name,
        "metadata": {
            "path": str(path), "dataset": raw.dataset, "voxel_size": voxel,
            "format": raw.metadata.get("format"),
            "tokenunify": {"kind": "affinities", "store": str(path)},
        },
        "contrast_limits": (0, 255) if np.dtype(data.dtype) == np.uint8 else (0, 1),
        "colormap": "magma",
    }
    if voxel is not None:
        kwargs["scale"] = (1.0, *(float(v) for v in voxel))
    if is_large(data.shape, data.dtype):  # a lazy pyramid: napari reads only the visible tile
        kwargs["multiscale"] = True
        if store:  # only finished blocks are read (a partial store is mostly empty chunks)
            from .io.store_view import StoreView, store_layer_data, store_pyramid

            view = StoreView(path, data.shape, data.dtype, name=raw.dataset or "affinities")
            data = store_layer_data(store_pyramid(view, voxel))
        else:
            data = lazy_pyramid(data, voxel)
    return (data, kwargs, "image")


def volume_layers(path: str | Path) -> list[LayerData]:
    """Every layer a path can give (several for containers with several 3D datasets)."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "image":
        raise VolumeError(f"{path}: a single 2D image; napari's own readers open it.")
    if fmt == "zarr":
        kind = block_store_kind(path)
        if kind == "affinities":  # a Predict store: its affinities, never the bookkeeping
            layer = affinity_layer(path, "affinities", store=True)
            if layer is not None:
                return [layer]
        elif kind == "labels":  # a blockwise segmentation store
            return [_layer(open_volume(path, dataset="labels"))]
    try:
        return _volume_layers(path, fmt)
    except VolumeError:
        # e.g. an exported ``*-affinities.ome.zarr`` (axes czyx): open it as affinities
        layer = affinity_layer(path)
        if layer is None:
            raise
        return [layer]


def _volume_layers(path: Path, fmt: str) -> list[LayerData]:
    names: list[str] = []
    if fmt == "hdf5":
        names = [n for n, s in list_hdf5_datasets(path).items() if len(s) >= 3]
    elif fmt == "n5":
        names = [n for n, s in list_n5_datasets(path).items() if len(s) >= 3 and n]
    elif fmt == "zarr":
        try:
            first = open_volume(path)
        except VolumeError as err:
            if "several 3D datasets" not in str(err):
                raise
            import zarr

            group = zarr.open_group(str(path), mode="r")
            names = [
                k
                for k, v in group.members(max_depth=None)
                if isinstance(v, zarr.Array) and v.ndim == 3
            ]
        else:
            if first.metadata.get("format") == "ome-zarr":
                return _ome_layers(path, None)
            return [_layer(first)]
    if len(names) <= 1:
        return [_layer(open_volume(path))]
    layers, errors = [], []
    for name in names[:MAX_LAYERS]:
        try:
            layers.append(_layer(open_volume(path, dataset=name)))
        except VolumeError as err:  # e.g. a 4D dataset beside the 3D ones: affinities, or skip it
            layer = affinity_layer(path, name)
            if layer is not None:
                layers.append(layer)
            else:
                errors.append(err)
    if not layers:
        raise errors[0]
    # images first, so labels are drawn on top
    return sorted(layers, key=lambda layer: layer[2] == "labels")


def get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 reader: a function for paths this plugin can read, else ``None``."""
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        layers = volume_layers(path)  # lazy: opens metadata only
    except (VolumeError, OSError) as err:
        if not _claims(path, err):
            return None  # napari's own readers may open it
        reason = refusal(path, err)

        def refuse(_path: Any, **_kwargs: Any) -> list[LayerData]:
            # raised (not warned: Python shows a warning once per place, napari only says
            # "refused the file" after that), so napari's notification names the reason every time
            raise VolumeError(reason)

        return refuse

    def reader(_path: Any, **_kwargs: Any) -> list[LayerData]:
        return layers

    return reader


def _claims(path: str | Path, err: BaseException) -> bool:
    """Whether a file we could not read is one only we would open (so the reason is ours to
    give): HDF5/N5 always; Zarr unless it is a 2D image, which napari's own reader opens."""
    suffix = Path(path).suffix.lower()
    if suffix in (".h5", ".hdf5", ".n5"):
        return True
    return suffix == ".zarr" and "2D image" not in str(err)


def refusal(path: str | Path, err: BaseException) -> str:
    """One line: which file, why it cannot be opened (the error names the file already, mostly)."""
    text = str(err) or type(err).__name__
    if str(path) in text:
        return f"napari-tokenunify cannot read it: {text}"
    return f"napari-tokenunify cannot read {path}: {text}"


# --- writers (Labels layers) -------------------------------------------------------------


def _write_labels(path: str, data: Any, meta: dict) -> list[str]:
    if isinstance(data, list | tuple):  # multiscale: write the full-resolution level
        data = data[0]
    if getattr(data, "ndim", 3) == 2:
        data = data[None]
    scale = meta.get("scale")
    voxel = None
    if scale is not None and len(scale) >= 3:
        voxel = tuple(float(s) for s in scale[-3:])
        if voxel == (1.0, 1.0, 1.0):
            voxel = None
    out = write_volume(path, data, kind="labels", voxel_size=voxel)
    return [str(out)]


def write_labels_zarr(path: str, data: Any, meta: dict) -> list[str]:
    """Labels layer -> Zarr (v2, chunked, zstd)."""
    return _write_labels(path, data, meta)


def write_labels_ome_zarr(path: str, data: Any, meta: dict) -> list[str]:
    """Labels layer -> OME-Zarr with a nearest-neighbour pyramid and ``image-label`` metadata."""
    return _write_labels(path, data, meta)


def write_labels_tiff(path: str, data: Any, meta: dict) -> list[str]:
    """Labels layer -> multi-page TIFF (BigTIFF when large)."""
    return _write_labels(path, data, meta)


def write_labels_hdf5(path: str, data: Any, meta: dict) -> list[str]:
    """Labels layer -> HDF5 dataset ``labels`` (chunked, gzip)."""
    return _write_labels(path, data, meta)


# --- sample data ---------------------------------------------------------------------------


def _sample(shape: tuple[int, int, int], anisotropy: float, tag: str) -> list[LayerData]:
    from .synthetic import make_synthetic_volume

    vol = make_synthetic_volume(shape, anisotropy=anisotropy, seed=0)
    scale = tuple(float(v) for v in vol.voxel_size)
    return [
        (
            vol.image,
            {
                "name": f"synthetic EM{tag}",
                "scale": scale,
                "contrast_limits": (0, 255),
                "colormap": "gray",
            },
            "image",
        ),
        (vol.labels, {"name": f"synthetic labels{tag}", "scale": scale}, "labels"),
    ]


def make_medulla_sample_data() -> list[LayerData]:
    """The real FIB-SEM sample shipped with the package (32×100×128 at 10 nm) and its labels."""
    from .samples import medulla_sample

    sample = medulla_sample()
    scale = tuple(sample.voxel_size)
    meta = {"voxel_size": list(scale), "source": sample.source, "licence": sample.licence}
    return [
        (sample.image, {"name": "medulla FIB-SEM", "scale": scale, "contrast_limits": (0, 255),
                        "colormap": "gray", "metadata": meta}, "image"),
        (sample.labels, {"name": "medulla ground truth", "scale": scale, "metadata": meta},
         "labels"),
    ]


def make_sample_data() -> list[LayerData]:
    """Synthetic isotropic (10 nm) FIB-SEM-like volume (64×128×128) with neuron labels."""
    return _sample((64, 128, 128), 1.0, "")


def make_anisotropic_sample_data() -> list[LayerData]:
    """Synthetic anisotropic (40×10×10 nm) ssTEM-like volume (24×128×128) with labels."""
    return _sample((24, 128, 128), 4.0, " (anisotropic)")
