"""Where the user is looking: the camera, the visible part of a layer, moving the view."""

from __future__ import annotations

from typing import Any

import numpy as np


def camera(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def canvas_size(viewer: Any) -> tuple[int, int] | None:
    """Canvas (height, width) in screen pixels, when the viewer knows it."""
    canvas = getattr(viewer, "canvas", None)
    size = getattr(canvas, "size", None)
    if size is None:
        size = getattr(viewer, "_canvas_size", None)
    if size is None or min(size) <= 0:
        return None
    return tuple(int(s) for s in size)  # type: ignore[return-value]


def visible_box(viewer: Any, layer: Any, depth: int = 16) -> tuple[tuple[int, int], ...]:
    """The part of ``layer`` (data voxels) on screen: the shown section ± ``depth``/2 in z and
    the canvas extent in y, x. In 3D display, the whole volume."""
    shape = tuple(int(s) for s in layer.data.shape[-3:])
    if viewer.dims.ndisplay == 3:
        return tuple((0, s) for s in shape)
    ndim = viewer.dims.ndim
    offset = ndim - 3
    center = np.array(viewer.dims.point[offset:], dtype=float)
    canvas = canvas_size(viewer) or (600, 800)
    zoom = max(float(camera(viewer).zoom), 1e-6)
    displayed = [a - offset for a in viewer.dims.displayed if a >= offset]
    lo, hi = center.copy(), center.copy()
    cam = camera(viewer).center[-len(displayed):]
    for d, axis in enumerate(displayed):
        half = canvas[d] / (2 * zoom) if d < len(canvas) else canvas[-1] / (2 * zoom)
        lo[axis], hi[axis] = cam[d] - half, cam[d] + half
    lo_d = np.asarray(layer.world_to_data(lo))
    hi_d = np.asarray(layer.world_to_data(hi))
    box = []
    for axis, size in enumerate(shape):
        if axis in displayed:
            a, b = sorted((lo_d[axis], hi_d[axis]))
            a, b = int(np.floor(a)), int(np.ceil(b)) + 1
        else:
            c = int(round(lo_d[axis]))
            a, b = c - depth // 2, c + depth // 2
        a, b = max(0, min(a, size - 1)), min(size, max(b, 1))
        box.append((a, max(b, a + 1)))
    return tuple(box)



def go_to(viewer: Any, layer: Any, center, extent=None) -> None:
    """Centre the view on a point given in ``layer``'s data coordinates.

    The layer may have fewer dimensions than the viewer (a 3D labels layer beside a 4D affinity
    map): its axes are the viewer's last ones. The axes that are not displayed (the section in
    2D) go to the nearest whole voxel, so the view shows a real section, never one between two.
    With ``extent`` (data voxels per axis) the zoom shows all of it on the canvas.
    """
    ndim = viewer.dims.ndim
    offset = ndim - len(center)
    displayed = list(viewer.dims.displayed)
    center = [
        float(c) if offset + i in displayed else float(np.round(float(c)))
        for i, c in enumerate(center)
    ]
    world = np.asarray(layer.data_to_world(center), dtype=float)
    point = list(viewer.dims.point)
    for i, w in enumerate(world):
        point[offset + i] = w
    for axis in range(ndim):
        if axis not in displayed:
            viewer.dims.set_point(axis, point[axis])
    camera(viewer).center = tuple(point[a] for a in displayed)
    canvas = canvas_size(viewer)
    if extent is not None and canvas and min(canvas) > 0:
        scale = layer.scale
        shown = [extent[a - offset] * scale[a - offset] for a in displayed[-2:] if a >= offset]
        if shown and max(shown) > 0:
            camera(viewer).zoom = 0.6 * min(canvas) / max(shown)
