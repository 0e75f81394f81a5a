"""Figures: PNG files drawn on :class:`matplotlib.figure.Figure` objects, never through pyplot, so no global
backend is set (the HTML pages: :mod:`brainuad.report.html`)."""

from __future__ import annotations

from pathlib import Path

from brainuad.io.volumes import atomic_path


def plot_loss_curve(history: list[dict], path: str | Path) -> Path:
    """Training and validation loss per epoch (log scale), written atomically."""
    plt = _pyplot()
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
    return _save(fig, path)


class _Figures:
    """pyplot's ``subplots`` without pyplot: :class:`matplotlib.figure.Figure` objects touch no global state, so
    brainuad never changes a notebook's backend (nor needs a display) and a figure is freed when dropped."""

    @staticmethod
    def subplots(*args, figsize=None, layout=None, **kwargs):
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, layout=layout)
        return fig, fig.subplots(*args, **kwargs)


def _pyplot() -> _Figures:
    return _Figures()


def _save(fig, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)


def _orientation_markers(ax, affine) -> None:
    """L/R and A/P letters on an axial panel drawn as ``array.T`` with ``origin="lower"`` (x right, y up)."""
    import numpy as np

    affine = np.asarray(affine if affine is not None else np.eye(4))
    right = "R" if affine[0, 0] >= 0 else "L"  # voxel x grows towards the patient's right: neurological view
    up = "A" if affine[1, 1] >= 0 else "P"
    left, down = {"R": "L", "L": "R"}[right], {"A": "P", "P": "A"}[up]
    style = {"color": "yellow", "fontsize": 8, "fontweight": "bold", "transform": ax.transAxes}
    ax.text(0.02, 0.5, left, ha="left", va="center", **style)
    ax.text(0.98, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.98, up, ha="center", va="top", **style)
    ax.text(0.5, 0.02, down, ha="center", va="bottom", **style)


def heat_scale(anomaly, threshold: float | None = None) -> float:
    """The top of the anomaly heat map's colour scale.

    The 99.5th percentile of the map's non-zero values, raised with a ``threshold`` so that the voxels above it keep
    distinct colours: segmented voxels are usually far fewer than 0.5 % of the map, so the percentile alone stopped
    below the threshold and painted every segmented voxel the same saturated colour.

    Args:
        anomaly: The anomaly map (any shape).
        threshold: The segmentation threshold, when there is one.

    Returns:
        At least the percentile; with a positive threshold, also at least the 99th percentile of the values above it
        and 1.25 × the threshold (the threshold at most 80 % up the bar).
    """
    import numpy as np

    anomaly = np.asarray(anomaly)
    positive = anomaly[anomaly > 0]
    vmax = float(np.percentile(positive, 99.5)) if positive.size else 1.0
    if threshold is None or not np.isfinite(threshold) or threshold <= 0:
        return vmax
    above = anomaly[anomaly > threshold]
    top = float(np.percentile(above, 99)) if above.size else threshold
    return max(vmax, top, 1.25 * float(threshold))


def plot_detection_rows(
    image,
    reconstruction,
    anomaly,
    segmentation,
    slices,
    path: str | Path,
    slice_labels: list[str] | None = None,
    threshold: float | None = None,
    affine=None,
    extent: float | None = None,
) -> Path:
    """The paper's Figure 3 layout: one row per axial slice — input, reconstruction, heatmap, segmentation.

    Args:
        image, reconstruction, anomaly, segmentation: Volumes on one grid (axis 2 axial).
        slices: Axial indices to show.
        path: PNG to write.
        slice_labels: One label per row (e.g. MNI z in mm and the native slice); default: the index.
        threshold: The segmentation threshold, named in the segmentation column's title and marked on the colour
            bar, whose scale extends above it (:func:`heat_scale`).
        affine: The grid's voxel → world affine, for the L/R and A/P markers (RAS+ assumed when absent).
        extent: The hysteresis extent level the segmentation grew to (named in the title), if any.
    """
    import numpy as np

    plt = _pyplot()
    slices = list(slices)
    fig, axes = plt.subplots(len(slices), 4, figsize=(11, 2.7 * len(slices)), squeeze=False, layout="constrained")
    vmax = heat_scale(anomaly, threshold)
    segmentation_title = "segmentation" if threshold is None else f"segmentation (map > {threshold:.3g})"
    if threshold is not None and extent is not None:
        segmentation_title = f"segmentation (seed > {threshold:.3g}, grown > {extent:.3g})"
    titles = ("input", "reconstruction", "anomaly heatmap |x − x̂|", segmentation_title)
    heat = None
    for row, u in enumerate(slices):
        panels = (image[:, :, u], reconstruction[:, :, u], anomaly[:, :, u], segmentation[:, :, u])
        for col, panel in enumerate(panels):
            ax = axes[row, col]
            if col == 2:
                ax.imshow(image[:, :, u].T, origin="lower", cmap="gray", vmin=0, vmax=1)
                heat = ax.imshow(
                    np.ma.masked_equal(panel.T, 0), origin="lower", cmap="inferno", vmin=0, vmax=vmax, alpha=0.8
                )
            elif col == 3:
                ax.imshow(image[:, :, u].T, origin="lower", cmap="gray", vmin=0, vmax=1)
                ax.imshow(np.ma.masked_equal(panel.T > 0, False), origin="lower", cmap="autumn", alpha=0.6)
            else:
                ax.imshow(panel.T, origin="lower", cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            _orientation_markers(ax, affine)
            if row == 0:
                ax.set_title(titles[col], fontsize=9)
        label = slice_labels[row] if slice_labels else f"axial slice {u}"
        axes[row, 0].set_ylabel(label, fontsize=8)
    if heat is not None:
        bar = fig.colorbar(heat, ax=list(axes[:, 2]), shrink=0.9, pad=0.01, aspect=40)
        label = "anomaly |x − x̂| (image scaled to 0…1)"
        if threshold is not None and 0 < threshold < vmax:
            bar.ax.axhline(threshold, color="cyan", linewidth=1.5)
            label += f"; cyan line: threshold {threshold:.3g}"
        bar.set_label(label, fontsize=8)
    return _save(fig, path)


def plot_slice_scores(normality, path: str | Path, calibrated=None, z_mm=None) -> Path:
    """The paper's Figure 2: normality score s(u) per axial slice (and the calibrated z-score when available).

    Args:
        normality: s(u) per axial slice.
        path: PNG to write.
        calibrated: z-scores against healthy scans (all NaN = no healthy reference; said on the plot).
        z_mm: Each slice's MNI z in mm, for the x axis (default: the slice index).
    """
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
    x = np.arange(len(normality)) if z_mm is None else np.asarray(z_mm)
    ax.plot(x, normality, color="tab:blue", label="normality s(u)")
    ax.set_xlabel("axial slice (MNI crop, inferior → superior)" if z_mm is None else "MNI z (mm), inferior → superior")
    ax.set_ylabel("s(u)  (0 = most abnormal)")
    ax.set_ylim(-0.05, 1.05)
    if calibrated is not None and np.isfinite(calibrated).any():
        twin = ax.twinx()
        twin.plot(x, calibrated, color="tab:red", alpha=0.7, label="calibrated z")
        twin.set_ylabel("z vs healthy", color="tab:red")
    elif calibrated is not None:
        ax.text(0.01, 0.02, "no calibrated z: fewer than 3 held-out healthy scans", transform=ax.transAxes, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _plot_curves(curves: dict, path: str | Path, title: str, kind: str) -> Path:
    import numpy as np
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    plotted = 0
    for label, (truth, scores) in curves.items():
        truth = np.asarray(truth, bool)
        if truth.all() or not truth.any():
            continue  # a curve needs both classes
        if kind == "roc":
            x, y, _ = roc_curve(truth, scores)
        else:
            y, x, _ = precision_recall_curve(truth, scores)
        ax.plot(x, y, label=label)
        plotted += 1
    if kind == "roc":
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
    else:
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if plotted:
        ax.legend(fontsize=8, loc="lower right" if kind == "roc" else "lower left")
    fig.tight_layout()
    return _save(fig, path)


def plot_roc_curves(curves: dict, path: str | Path, title: str = "ROC") -> Path:
    """ROC curves, one per method: ``curves`` maps a label to (binary truth, scores)."""
    return _plot_curves(curves, path, title, "roc")


def plot_pr_curves(curves: dict, path: str | Path, title: str = "precision-recall") -> Path:
    """Precision-recall curves (positive = abnormal), one per method: label → (binary truth, scores)."""
    return _plot_curves(curves, path, title, "pr")


def plot_reconstruction_panel(image_slice, reconstructions: dict, path: str | Path, title: str = "") -> Path:
    """The paper's Figure 5: one input slice and each model's reconstruction of it, side by side."""
    plt = _pyplot()
    panels = {"input": image_slice, **reconstructions}
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.8), squeeze=False)
    for ax, (label, panel) in zip(axes[0], panels.items()):
        ax.imshow(panel.T, origin="lower", cmap="gray", vmin=0, vmax=1)
        ax.set_title(label, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_froc(froc: dict, path: str | Path, title: str = "FROC") -> Path:
    """Lesion sensitivity against false-positive components per scan (an evaluation's ``froc`` section): the
    reported and tuning curves, all lesions and lesions >= 1 mL, and the operating points marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, style in (("reported", "-"), ("tuning", ":")):
        result = froc.get(name)
        if not result:
            continue
        fp = result["false_positives_per_scan"]
        ax.plot(fp, result["sensitivity"], style, color="C0", label=f"{name}: all lesions (n={result['lesions']})")
        large = next(k for k in result if k.startswith("sensitivity_lesions_ge"))
        count = result[large.replace("sensitivity_", "")]
        ax.plot(fp, result[large], style, color="C1", label=f"{name}: lesions >= 1 mL (n={count})")
    for label, point in froc.get("operating_points", {}).items():
        where = point.get("reported", point)
        if "false_positives_per_scan" in where:
            ax.plot(where["false_positives_per_scan"], where["sensitivity"], "o", label=label.replace("_", " "))
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("false-positive components per scan")
    ax.set_ylabel("lesion sensitivity")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
