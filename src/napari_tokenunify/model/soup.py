"""A "model soup" (Wortsman et al., 2022): the uniform average of the weights of networks
finetuned from one start, which often generalises better than each of them at no cost at
prediction time."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from .bundled import portable_source
from .files import weights_sha256


class SoupError(ValueError):
    """The models cannot be averaged (different architectures or output channels)."""


def average_weights(models: Sequence[torch.nn.Module]) -> torch.nn.Module:
    """A copy of ``models[0]`` whose floating-point weights are the mean of all ``models``';
    integer buffers (counters) are taken from the first. Its card (a copy of the first's)
    records the ingredients under ``training.soup``."""
    if len(models) < 2:
        raise SoupError("a soup needs at least two models")
    states = [m.state_dict() for m in models]
    names = set(states[0])
    for i, s in enumerate(states[1:], start=1):
        if set(s) != names:
            raise SoupError(f"model {i} has other weights than model 0: they are not one architecture")
        bad = [n for n in names if s[n].shape != states[0][n].shape]
        if bad:
            raise SoupError(
                f"model {i} differs from model 0 in the shape of {bad[0]} ({tuple(s[bad[0]].shape)} "
                f"against {tuple(states[0][bad[0]].shape)}); average only models of one "
                "architecture and output channels (bundle them first)"
            )
    out = {}
    for n, t in states[0].items():
        if t.is_floating_point():
            out[n] = torch.stack([s[n].detach().float() for s in states]).mean(0).to(t.dtype)
        else:
            out[n] = t.clone()
    soup = copy.deepcopy(models[0])
    soup.load_state_dict(out)
    soup.source_path = None  # a new model: it comes from no file (not the first ingredient's)
    card = copy.deepcopy(getattr(models[0], "card", None))
    if card is not None:
        card.training = dict(card.training)
        card.training["soup"] = [
            {"name": getattr(getattr(m, "card", None), "name", ""),
             "source": portable_source(getattr(m, "source_path", None)) or "", "sha256": weights_sha256(m)}
            for m in models
        ]
        soup.card = card
    return soup
