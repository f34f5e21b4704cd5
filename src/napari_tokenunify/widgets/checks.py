"""Checks on the layers a widget is asked to work on; each failure names the fix."""

from __future__ import annotations

from typing import Any

import numpy as np


class LayerError(ValueError):
    """A layer that cannot be used for the requested action."""


def layer_array(layer: Any) -> Any:
    """The full-resolution array of a layer (level 0 of a multiscale layer)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def require_image(layer: Any, action: str = "this") -> Any:
    """A 3D single-channel image layer, or a :class:`LayerError` saying what is wrong."""
    if layer is None:
        raise LayerError(
            f"no image layer for {action}: open an EM volume (File > Open) or a sample "
            "(File > Open Sample > TokenUnify EM Segmentation) and choose it in the widget"
        )
    if getattr(layer, "rgb", False):
        raise LayerError(
            f"layer '{layer.name}' is RGB; EM volumes are single-channel: convert it to grayscale "
            "(or open the raw stack) first"
        )
    arr = layer_array(layer)
    if arr.ndim != 3:
        kind = "2D" if arr.ndim == 2 else f"{arr.ndim}D"
        raise LayerError(
            f"layer '{layer.name}' is {kind} with shape {tuple(arr.shape)}; segmentation needs a "
            "3D stack (z, y, x): open the whole stack, not a single section"
        )
    return arr


def require_labels(layer: Any, like: Any = None, action: str = "this") -> np.ndarray:
    """A 3D labels layer, matching ``like`` (an image layer or shape) when given."""
    if layer is None:
        raise LayerError(
            f"no labels layer for {action}: segment first (Segment section) or open labels"
        )
    arr = layer_array(layer)
    if arr.ndim != 3:
        raise LayerError(f"labels layer '{layer.name}' must be 3D (z, y, x), got shape {arr.shape}")
    if like is not None:
        shape = tuple(like) if isinstance(like, tuple) else tuple(layer_array(like).shape)
        if tuple(arr.shape) != shape:
            name = getattr(like, "name", "the image")
            raise LayerError(
                f"labels layer '{layer.name}' has shape {tuple(arr.shape)} but '{name}' has "
                f"{shape}; pick labels made for this image (same z, y, x size)"
            )
    return arr


# an edit computes masks and a copy beside the labels: keep the labels under this share of free RAM
EDIT_MEMORY_SHARE = 0.3


def free_memory_bytes() -> int:
    """Memory this machine can still give (psutil's 'available')."""
    import psutil

    return int(psutil.virtual_memory().available)


def labels_in_memory(layer: Any, data: Any, action: str = "proofreading") -> np.ndarray:
    """``data`` (a labels layer's array) as numpy, reading a store-backed array (Zarr, dask)
    only when it fits comfortably in free memory; otherwise a :class:`LayerError` saying why."""
    if isinstance(data, np.ndarray):
        return data
    need = int(np.prod(data.shape)) * np.dtype(data.dtype).itemsize
    free = free_memory_bytes()
    if need > EDIT_MEMORY_SHARE * free:
        raise LayerError(
            f"labels layer '{layer.name}' is {need / 2**30:.1f} GiB on disk and {action} reads it "
            f"into memory, but only {free / 2**30:.1f} GiB is free: nothing was changed. Close "
            "other programs, or proofread a crop of the volume (open a region of it as its own "
            "labels layer)"
        )
    return np.asarray(data[...])


def require_affinities(layer: Any, shape: tuple[int, ...] | None = None) -> Any:
    """An affinity image layer (channels, z, y, x) matching ``shape`` (z, y, x) when given."""
    if layer is None:
        raise LayerError("no affinity layer: predict affinities first (Predict section)")
    arr = layer_array(layer)
    if arr.ndim != 4:
        raise LayerError(
            f"layer '{layer.name}' is not an affinity map (channels, z, y, x): shape {arr.shape}"
        )
    if shape is not None and tuple(arr.shape[1:]) != tuple(shape):
        raise LayerError(
            f"affinities '{layer.name}' cover {tuple(arr.shape[1:])} but the labels are "
            f"{tuple(shape)}; predict on the same image"
        )
    return arr
