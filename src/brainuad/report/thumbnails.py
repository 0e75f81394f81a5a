"""Small PNG thumbnails for pages that list many scans (the BIDS group level's triage page)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainuad.io.files import atomic_path


def plot_thumbnail(image_slice: np.ndarray, anomaly_slice: np.ndarray, path: str | Path, title: str = "") -> Path:
    """A small axial thumbnail (RAS+ arrays, x then y; neurological view, anterior up): the scan in grey, the
    anomaly map in colour where above 0."""
    from matplotlib.figure import Figure  # no pyplot: no global backend is touched

    fig = Figure(figsize=(1.8, 2.0))
    ax = fig.subplots()
    ax.imshow(np.rot90(image_slice), cmap="gray", interpolation="nearest")
    overlay = np.ma.masked_less_equal(np.rot90(anomaly_slice), 0)
    ax.imshow(overlay, cmap="hot", alpha=0.7, interpolation="nearest")
    ax.set_title(title, fontsize=7)
    ax.axis("off")
    fig.tight_layout(pad=0.1)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)
