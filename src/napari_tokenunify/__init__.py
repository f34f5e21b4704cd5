"""napari-tokenunify: neuron segmentation of EM volumes with TokenUnify-pretrained Mamba networks.

The compute code (``io``, ``model``, ``engine``, ``training``) imports neither Qt nor napari;
the napari plugin lives in ``widgets`` and the command line in ``cli``.
"""

from .threads import passive_wait_policy as _passive_wait_policy

__version__ = "0.1.0"

_passive_wait_policy()  # before anything loads torch's OpenMP runtime (see threads.py)

__all__ = ["__version__"]
