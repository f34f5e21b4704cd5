"""The training loss log (CSV, appended as training goes) and its plot (PNG, matplotlib Agg)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

FIELDS = ("step", "objective", "loss", "lr", "seconds")


class LossLog:
    """Appends one row per step to a CSV file; survives restarts (resumed runs append)."""

    def __init__(self, path: str | Path, resume: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not resume or not self.path.exists():
            with self.path.open("w", newline="") as fh:
                csv.writer(fh).writerow(FIELDS)

    def truncate_after(self, step: int) -> None:
        """Drop rows after ``step`` (those a crashed run logged past its last checkpoint)."""
        rows = [r for r in read_log(self.path) if int(r["step"]) <= step]
        with self.path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, FIELDS)
            w.writeheader()
            w.writerows(rows)

    def write(self, step: int, objective: str, loss: float, lr: float, seconds: float) -> None:
        with self.path.open("a", newline="") as fh:
            csv.writer(fh).writerow([step, objective, f"{loss:.6g}", f"{lr:.6g}", f"{seconds:.3f}"])


def read_log(path: str | Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as fh:
        return list(csv.DictReader(fh))


def plot_losses(csv_path: str | Path, png_path: str | Path, smooth: int = 25) -> Path:
    """Plot each objective's loss against the step (raw points faint, running mean solid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(csv_path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name in sorted({r["objective"] for r in rows}):
        steps = np.array([int(r["step"]) for r in rows if r["objective"] == name])
        loss = np.array([float(r["loss"]) for r in rows if r["objective"] == name])
        if not len(loss):
            continue
        (line,) = ax.plot(steps, loss, alpha=0.25, lw=0.8)
        k = max(1, min(smooth, len(loss)))
        mean = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], mean, color=line.get_color(), lw=1.8, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if rows:
        ax.legend()
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path)
    plt.close(fig)
    return png_path
