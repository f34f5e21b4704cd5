"""Make napari open HDF5 and N5 volumes with this plugin's reader.

napari's builtin reader also claims ``*.h5``/``*.hdf5`` (through imageio, which cannot read EM
volumes: "cannot find loader for this HDF5 file"), so with two readers napari asks on every
*File > Open* or drop. Where the user has no preference for a pattern yet, we record ours in
napari's reader preferences (``settings.plugins.extension2reader``, shown and editable under
*Preferences > Plugins*). ``viewer.open(path)`` in Python defaults to ``plugin="napari"`` and is
not affected: pass ``plugin="napari-tokenunify"`` there (the README says so).
"""

from __future__ import annotations

PLUGIN = "napari-tokenunify"
#: patterns only we read as volumes (napari's own reader fails on them); Zarr and TIFF stay the
#: user's choice because napari opens those itself
PATTERNS = ("*.h5", "*.hdf5", "*.n5")


def prefer_our_reader(patterns: tuple[str, ...] = PATTERNS) -> list[str]:
    """Set this plugin as the reader for ``patterns`` without a preference; returns those set."""
    try:
        from napari.settings import get_settings

        prefs = get_settings().plugins.extension2reader
    except Exception:  # noqa: BLE001 - settings unavailable (e.g. read-only): napari asks then
        return []
    missing = [p for p in patterns if p not in prefs]
    if missing:
        get_settings().plugins.extension2reader = {**prefs, **{p: PLUGIN for p in missing}}
    return missing
