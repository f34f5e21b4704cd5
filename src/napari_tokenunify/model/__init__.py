"""EMmamba, the TokenUnify segmentation network: build, load (safetensors + card, TokenUnify
``.pth``, bundled models) and save. No Qt, no napari."""

from .card import ModelCard
from .checkpoint import MismatchReport, ModelFileError, compare_state, infer_config, read_pth
from .files import build_model, load_model, load_pth, save_model, weights_sha256
from .network import EMMamba
from .presets import PRESETS, ModelConfig, get_preset

__all__ = [
    "EMMamba",
    "MismatchReport",
    "ModelCard",
    "ModelConfig",
    "ModelFileError",
    "PRESETS",
    "build_model",
    "compare_state",
    "get_preset",
    "infer_config",
    "load_model",
    "load_pth",
    "read_pth",
    "save_model",
    "weights_sha256",
]
