"""Figures that go with an artefact: confusion matrix and, for ODE-Nets, accuracy/NFE vs tolerance."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from service.signal.beats import CLASSES  # noqa: E402


def confusion_png(confusion: list[list[int]], title: str, path: Path) -> None:
    """Row-normalised confusion matrix (recall on the diagonal) with raw counts in each cell."""
    counts = np.asarray(confusion)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.6, 4.0), dpi=100)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(CLASSES)):
        for j in range(len(CLASSES)):
            ax.text(j, i, f"{counts[i, j]}\n{rates[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(CLASSES)), CLASSES)
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def tolerance_png(sweep: list[dict], title: str, path: Path) -> None:
    """Accuracy and the mean NFE per beat against rtol = atol, log tolerance axis."""
    tol = [row["rtol"] for row in sweep]
    fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=100)
    ax.semilogx(tol, [100 * row["accuracy"] for row in sweep], "o-", color="tab:blue")
    ax.set_xlabel("rtol = atol")
    ax.set_ylabel("accuracy (%)", color="tab:blue")
    ax.invert_xaxis()
    nfe_ax = ax.twinx()
    nfe_ax.semilogx(tol, [row["nfe_per_beat_mean"] for row in sweep], "s--", color="tab:red")
    nfe_ax.set_ylabel("NFE per beat (mean)", color="tab:red")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
