"""The residual U-Net baseline for training: the network lives in :mod:`..model.unet`; this
module keeps the older torch-file format (``unet.pt``) readable."""

from __future__ import annotations

from ..model.unet import ResidualUNet3D, unet_from_config


def save_unet(model: ResidualUNet3D, path) -> None:
    """Save the baseline's weights and configuration (a torch file; atomic)."""
    from .checkpoints import save_checkpoint

    save_checkpoint(path, {"state": model.state_dict(), "config": model.config})


def load_unet(path) -> ResidualUNet3D:
    """Load a baseline saved with :func:`save_unet`, in eval mode."""
    from .checkpoints import load_checkpoint

    saved = load_checkpoint(path)
    net = unet_from_config(saved["config"])
    net.load_state_dict(saved["state"])
    return net.eval()


__all__ = ["ResidualUNet3D", "load_unet", "save_unet", "unet_from_config"]
