"""Procedural EM-like volumes with ground-truth neuron labels, for sample data, tests and benchmarks.

Cells are a warped Voronoi tessellation (cell bodies) crossed by neurite tubes (random smooth
curves); membranes are the dark one-to-two-voxel boundaries between different ids. The image is
blurred (anisotropically when asked), textured with small dark vesicles and Gaussian noise.
Everything derives from one ``seed``, so tests are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass
class SyntheticVolume:
    """A generated image (uint8, z, y, x), its labels (uint32; 0 on membranes) and voxel size."""

    image: np.ndarray
    labels: np.ndarray
    voxel_size: tuple[float, float, float]


def _smooth_field(shape, sigma, rng) -> np.ndarray:
    field = rng.standard_normal(shape).astype(np.float32)
    field = ndi.gaussian_filter(field, sigma)
    field /= field.std() + 1e-8
    return field


def _warped_voronoi(shape, n_cells, anisotropy, rng, warp) -> np.ndarray:
    seeds = np.zeros(shape, dtype=bool)
    coords = [rng.integers(0, s, size=n_cells) for s in shape]
    seeds[tuple(coords)] = True
    # Nearest seed in physical space (z voxels are `anisotropy` times thicker).
    _, idx = ndi.distance_transform_edt(~seeds, sampling=(anisotropy, 1.0, 1.0), return_indices=True)
    ids = np.zeros(shape, dtype=np.uint32)
    ids[tuple(coords)] = np.arange(1, n_cells + 1, dtype=np.uint32)
    # Warp the lookup coordinates with a smooth displacement so boundaries curve like membranes.
    grid = np.indices(shape, dtype=np.float32)
    sigma = max(2.0, min(shape[1:]) / 12)
    for axis in range(3):
        scale = warp * (1.0 if axis else 1.0 / anisotropy)
        grid[axis] += scale * _smooth_field(shape, (sigma / anisotropy, sigma, sigma), rng)
        np.clip(grid[axis], 0, shape[axis] - 1, out=grid[axis])
    grid = np.rint(grid).astype(np.intp)
    nearest = tuple(idx[a][tuple(grid)] for a in range(3))
    return ids[nearest]


def _paint_neurites(labels, n_tubes, anisotropy, rng) -> None:
    shape = labels.shape
    next_id = int(labels.max()) + 1
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    for _ in range(n_tubes):
        radius = rng.uniform(1.5, 3.5)
        # A smooth curve running roughly along z (as axons do through an EM stack).
        n_pts = 6
        pz = np.linspace(-0.1 * shape[0], 1.1 * shape[0], n_pts)
        py = rng.uniform(0, shape[1]) + np.cumsum(rng.normal(0, shape[1] / 10, n_pts))
        px = rng.uniform(0, shape[2]) + np.cumsum(rng.normal(0, shape[2] / 10, n_pts))
        t = np.linspace(0, 1, n_pts)
        ts = np.linspace(0, 1, 8 * shape[0] + 8)
        cz, cy, cx = (np.interp(ts, t, p) for p in (pz, py, px))
        mask = np.zeros(shape, dtype=bool)
        r_pix = int(np.ceil(radius)) + 1
        for z0, y0, x0 in zip(cz, cy, cx, strict=True):
            zi = int(round(z0))
            if not 0 <= zi < shape[0]:
                continue
            y_lo, y_hi = max(0, int(y0) - r_pix), min(shape[1], int(y0) + r_pix + 1)
            x_lo, x_hi = max(0, int(x0) - r_pix), min(shape[2], int(x0) + r_pix + 1)
            if y_lo >= y_hi or x_lo >= x_hi:
                continue
            d2 = (yy[zi, y_lo:y_hi, x_lo:x_hi] - y0) ** 2 + (xx[zi, y_lo:y_hi, x_lo:x_hi] - x0) ** 2
            mask[zi, y_lo:y_hi, x_lo:x_hi] |= d2 <= radius**2
        if mask.any():
            labels[mask] = next_id
            next_id += 1
    del zz, yy, xx


def _relabel_connected(labels: np.ndarray) -> np.ndarray:
    """Give every 6-connected piece of every id its own id (1..n), keeping 0 as 0."""
    from skimage.measure import label as cc_label

    return cc_label(labels, background=0, connectivity=1).astype(np.uint32)


def make_synthetic_volume(
    shape: tuple[int, int, int] = (64, 128, 128),
    *,
    n_cells: int | None = None,
    n_neurites: int | None = None,
    anisotropy: float = 1.0,
    membrane_width: int = 1,
    blur: float = 1.0,
    noise: float = 0.06,
    warp: float = 3.0,
    seed: int = 0,
) -> SyntheticVolume:
    """Generate an EM-like volume and its neuron labels.

    ``anisotropy`` is the z voxel size over the in-plane size (e.g. 4 for 40×10×10 nm ssTEM);
    blur is then weaker along z. ``membrane_width`` sets the dark boundary thickness in voxels.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"shape must be three sizes of at least 4 voxels, got {shape}")
    rng = np.random.default_rng(seed)
    volume_um = shape[0] * anisotropy * shape[1] * shape[2]
    if n_cells is None:
        n_cells = max(4, int(volume_um / 9000))
    if n_neurites is None:
        n_neurites = max(2, int(shape[1] * shape[2] / 1500))
    labels = _warped_voronoi(shape, n_cells, anisotropy, rng, warp)
    _paint_neurites(labels, n_neurites, anisotropy, rng)

    from skimage.segmentation import find_boundaries

    boundary = np.zeros(shape, dtype=bool)
    for z in range(shape[0]):  # in-plane membranes: every section shows them
        boundary[z] = find_boundaries(labels[z], mode="inner" if membrane_width == 1 else "thick")
    if anisotropy <= 1.5:  # isotropic data also shows membranes between sections
        boundary |= find_boundaries(labels, connectivity=1, mode="inner")
    if membrane_width > 2:
        boundary = ndi.binary_dilation(boundary, iterations=membrane_width - 2)

    gt = labels.copy()
    gt[boundary] = 0
    gt = _relabel_connected(gt)

    # Image: bright cytoplasm with per-cell shade, dark membranes, vesicle texture, blur, noise.
    shade = rng.uniform(0.55, 0.85, size=int(labels.max()) + 1).astype(np.float32)
    img = shade[labels]
    img[boundary] = 0.12
    vesicles = rng.random(shape) < 0.004
    img[vesicles & ~boundary] *= 0.6
    img = ndi.gaussian_filter(img, (blur / anisotropy, blur, blur)) if blur > 0 else img
    img += noise * rng.standard_normal(shape).astype(np.float32)
    image = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    voxel = (10.0 * anisotropy, 10.0, 10.0)
    return SyntheticVolume(image=image, labels=gt, voxel_size=voxel)
