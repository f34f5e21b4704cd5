"""napari-tokenunify: neuron segmentation of EM volumes with TokenUnify-pretrained Mamba networks.

The compute code (``io``, ``model``, ``engine``, ``training``) imports neither Qt nor napari;
the napari plugin lives in ``widgets`` and the command line in ``cli``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
