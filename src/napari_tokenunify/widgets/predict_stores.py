"""Which affinity store a Predict run uses: the chosen one, or the first beside it that is free or
holds the same run (``engine.store.in_free_store``). A finished store of the same model and
settings is reused (nothing is computed); one of another model or other test-time flips is kept
and the run goes to a new store. The user sees one short line; the details go to the log."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("napari_tokenunify")
MAX_REASON = 120


def in_free_store_call(predict: Callable[..., Any], chosen: dict[str, Any]) -> Callable[..., Any]:
    """``predict_affinities`` (same arguments) that writes into a free or matching store; the
    path it is trying is kept in ``chosen["out"]`` (read by the GUI to show that store), the
    stores it kept in ``chosen["kept"]`` and ``chosen["reused"]`` says whether nothing was left
    to compute."""
    from napari_tokenunify.engine.store import in_free_store

    def call(*args: Any, out: Path, **kwargs: Any) -> Any:
        def run(path: Path) -> Any:
            chosen["out"] = path
            return predict(*args, out=path, **kwargs)

        result, used, reused = in_free_store(run, out, chosen.setdefault("kept", []))
        chosen["out"], chosen["reused"] = used, reused
        return result

    return call


def _cut(text: str, limit: int = MAX_REASON) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def store_message(chosen: dict[str, Any]) -> str | None:
    """One short line about the store used (``None`` when it was simply the chosen one, new or
    resumed); the full reasons go to the log."""
    used = Path(chosen.get("out", ""))
    kept = chosen.get("kept") or []
    for path, reason in kept:
        log.info("Predict: kept %s (another run: %s); this run uses %s", path, reason, used)
    if kept:
        first, reason = kept[0]
        more = f" (and {len(kept) - 1} more)" if len(kept) > 1 else ""
        what = "reused the finished" if chosen.get("reused") else "predicting into"
        return (f"{Path(first).name}{more} holds another run ({_cut(reason)}); kept it, "
                f"{what} {used.name}")
    if chosen.get("reused"):
        return f"Reused the finished prediction in {used.name} (same model and settings)"
    return None
