"""Figures (PNG, matplotlib's non-interactive backend): loss curves now; heatmaps and ROC/PR curves later."""

from __future__ import annotations

from pathlib import Path

from brainuad.io import atomic_path


def plot_loss_curve(history: list[dict], path: str | Path) -> Path:
    """Training and validation loss per epoch (log scale), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [row["train_loss"] for row in history], label="train")
    ax.plot(epochs, [row["val_loss"] for row in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean squared error")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
