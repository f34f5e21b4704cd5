"""Lazy EM volume I/O (no Qt, no napari).

``open_volume`` opens TIFF/BigTIFF, Zarr v2/v3, OME-Zarr, HDF5, N5 and folders of 2D slices as
(z, y, x) dask arrays without reading voxels; ``write_volume`` streams arrays to Zarr, OME-Zarr,
TIFF, HDF5 or N5 chunk by chunk and atomically.
"""

from .atomic import atomic_output
from .open import open_volume
from .read_hdf5 import list_hdf5_datasets
from .read_n5 import list_n5_datasets
from .sources import close_hdf5_files
from .volume import Volume, VolumeError, VolumeNotFoundError
from .write import write_labels, write_volume

__all__ = [
    "Volume",
    "VolumeError",
    "VolumeNotFoundError",
    "atomic_output",
    "close_hdf5_files",
    "list_hdf5_datasets",
    "list_n5_datasets",
    "open_volume",
    "write_labels",
    "write_volume",
]
