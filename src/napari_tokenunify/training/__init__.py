"""TokenUnify pretraining and affinity finetuning (library code: no Qt, no napari).

- :func:`pretrain` — self-supervised pretraining of EMmamba with the random-, next- and
  next-all-token objectives (:mod:`.objectives`) on unlabeled volumes.
- :func:`finetune` — supervised affinity training on instance labels, from a pretrained model,
  a TokenUnify ``.pth`` or from scratch, with validation by VOI/ARAND; its hyper-parameters are a
  :class:`~.config.FinetuneConfig`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["pretrain", "finetune", "FinetuneConfig", "TrainingDataError"]


def __getattr__(name: str) -> Any:  # lazy, so importing the package stays cheap
    if name == "pretrain":
        from .pretrain import pretrain

        return pretrain
    if name == "finetune":
        from .finetune import finetune

        return finetune
    if name == "FinetuneConfig":
        from .config import FinetuneConfig

        return FinetuneConfig
    if name == "TrainingDataError":
        from .targets import TrainingDataError

        return TrainingDataError
    raise AttributeError(name)
