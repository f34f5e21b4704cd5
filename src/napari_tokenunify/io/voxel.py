"""Voxel sizes: parse them from file attributes (several conventions) and check user overrides."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .volume import VolumeError, VoxelSize

# Length units to nanometres (OME-NGFF / UDUNITS names and common abbreviations).
UNIT_NM = {
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0,
    "um": 1e3, "µm": 1e3, "μm": 1e3, "micron": 1e3, "micrometer": 1e3, "micrometre": 1e3,
    "mm": 1e6, "millimeter": 1e6, "millimetre": 1e6,
    "m": 1e9, "meter": 1e9, "metre": 1e9,
    "a": 0.1, "angstrom": 0.1, "pm": 1e-3, "picometer": 1e-3,
}  # fmt: skip


def unit_to_nm(unit: str | None) -> float | None:
    """Factor from ``unit`` to nm, or ``None`` when the unit is unknown or missing."""
    if not unit:
        return None
    return UNIT_NM.get(str(unit).strip().lower())


def _three(values: Any) -> tuple[float, float, float] | None:
    try:
        vals = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    if len(vals) < 3 or any(not v > 0 for v in vals[-3:]):
        return None
    z, y, x = vals[-3:]
    return (z, y, x)


def voxel_size_from_attrs(attrs: Mapping[str, Any], *, xyz_order: bool = False) -> VoxelSize | None:
    """Voxel size (z, y, x) nm from common attribute conventions, or ``None``.

    Understood: ``resolution_nm_zyx``, ``resolution`` / ``voxel_size`` (funlib/daisy: z, y, x nm;
    x, y, z in N5 when ``xyz_order``), ``element_size_um`` (ilastik/Fiji HDF5, z, y, x µm) and
    N5 ``pixelResolution`` ``{"dimensions": [x, y, z], "unit": "nm"}``.
    """
    if "resolution_nm_zyx" in attrs:
        return _three(attrs["resolution_nm_zyx"])
    pr = attrs.get("pixelResolution")
    if isinstance(pr, Mapping) and "dimensions" in pr:
        dims = _three(list(pr["dimensions"])[::-1])
        factor = unit_to_nm(pr.get("unit", "nm")) or 1.0
        return tuple(v * factor for v in dims) if dims else None  # type: ignore[return-value]
    for key in ("resolution", "voxel_size", "voxel_size_nm"):
        if key in attrs:
            vals = list(attrs[key])
            return _three(vals[::-1] if xyz_order else vals)
    if "element_size_um" in attrs:
        vals = _three(attrs["element_size_um"])
        return tuple(v * 1e3 for v in vals) if vals else None  # type: ignore[return-value]
    return None


def check_voxel_size(voxel_size: float | Sequence[float] | None, where: str) -> VoxelSize | None:
    """Validate a user-given voxel size: one number (isotropic) or three (z, y, x), all > 0."""
    if voxel_size is None:
        return None
    if isinstance(voxel_size, int | float):
        voxel_size = (voxel_size,) * 3
    try:
        vals = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError):
        raise VolumeError(
            f"{where}: voxel_size {voxel_size!r} is not numbers; give (z, y, x) in nm, e.g. (40, 4, 4)."
        ) from None
    if len(vals) != 3 or any(not v > 0 for v in vals):
        raise VolumeError(
            f"{where}: voxel_size {voxel_size!r} must be three positive numbers (z, y, x) in nm, "
            "e.g. (40, 4, 4)."
        )
    return vals  # type: ignore[return-value]
