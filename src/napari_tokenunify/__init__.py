"""napari-tokenunify: neuron segmentation of EM volumes with TokenUnify-pretrained Mamba networks.

The compute code (``io``, ``model``, ``engine``, ``training``) imports neither Qt nor napari;
the napari plugin lives in ``widgets`` and the command line in ``cli``.
"""

from .threads import short_openmp_waits as _short_openmp_waits

__version__ = "0.1.0"

_short_openmp_waits()  # before anything loads torch's OpenMP runtime (see threads.py)

__all__ = ["__version__"]
