"""Figures (PNG, matplotlib's non-interactive backend) and the self-contained HTML report."""

from __future__ import annotations

from pathlib import Path

from brainuad.io import atomic_path


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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


def plot_detection_rows(image, reconstruction, anomaly, segmentation, slices, path: str | Path) -> Path:
    """The paper's Figure 3 layout: one row per axial slice — input, reconstruction, heatmap, segmentation."""
    import numpy as np

    plt = _pyplot()
    slices = list(slices)
    fig, axes = plt.subplots(len(slices), 4, figsize=(10, 2.6 * len(slices)), squeeze=False)
    vmax = float(np.percentile(anomaly[anomaly > 0], 99.5)) if (anomaly > 0).any() else 1.0
    titles = ("input", "reconstruction", "anomaly heatmap |x − x̂|", "segmentation")
    for row, u in enumerate(slices):
        panels = (image[:, :, u], reconstruction[:, :, u], anomaly[:, :, u], segmentation[:, :, u])
        for col, panel in enumerate(panels):
            ax = axes[row, col]
            if col == 2:
                ax.imshow(image[:, :, u].T, origin="lower", cmap="gray", vmin=0, vmax=1)
                ax.imshow(np.ma.masked_equal(panel.T, 0), origin="lower", cmap="inferno", vmin=0, vmax=vmax, alpha=0.8)
            elif col == 3:
                ax.imshow(image[:, :, u].T, origin="lower", cmap="gray", vmin=0, vmax=1)
                ax.imshow(np.ma.masked_equal(panel.T > 0, False), origin="lower", cmap="autumn", alpha=0.6)
            else:
                ax.imshow(panel.T, origin="lower", cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=9)
        axes[row, 0].set_ylabel(f"axial slice {u}", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_slice_scores(normality, path: str | Path, calibrated=None) -> Path:
    """The paper's Figure 2: normality score s(u) per axial slice (and the calibrated z-score when available)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(range(len(normality)), normality, color="tab:blue", label="normality s(u)")
    ax.set_xlabel("axial slice (MNI crop, inferior → superior)")
    ax.set_ylabel("s(u)  (0 = most abnormal)")
    ax.set_ylim(-0.05, 1.05)
    if calibrated is not None:
        twin = ax.twinx()
        twin.plot(range(len(calibrated)), calibrated, color="tab:red", alpha=0.7, label="calibrated z")
        twin.set_ylabel("z vs healthy", color="tab:red")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _markdown_table_html(table: str) -> str:
    import html

    rows = [r.strip().strip("|").split("|") for r in table.strip().splitlines() if not set(r) <= set("|-: ")]
    head, body = rows[0], rows[1:]
    cells = "".join(f"<th>{html.escape(c.strip())}</th>" for c in head)
    lines = [f"<table><tr>{cells}</tr>"]
    for row in body:
        lines.append("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in row) + "</tr>")
    return "".join(lines) + "</table>"


def html_report(
    title: str,
    summary: dict,
    images: dict[str, Path],
    path: str | Path,
    notes: list[str] | None = None,
    table: str | None = None,
) -> Path:
    """A self-contained HTML page (images embedded as base64, no network) with the summary and figures.

    Args:
        title: Page title.
        summary: Shown as JSON at the end.
        images: Caption → PNG file.
        path: Where to write the page.
        notes: Paragraphs (trusted HTML written by brainuad itself) shown under the title.
        table: A Markdown table shown as an HTML table.
    """
    import base64
    import html
    import json

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{max-width:100%}"
        "pre{background:#f4f4f4;padding:1em;overflow:auto}table{border-collapse:collapse;font-size:90%}"
        "td,th{border:1px solid #ccc;padding:4px 6px}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p><b>Research tool, not a medical device.</b> Findings are unsupervised anomalies, not diagnoses.</p>",
        *(f"<p>{note}</p>" for note in notes or []),
    ]
    if table:
        parts.append("<h2>Results</h2>" + _markdown_table_html(table))
    for caption, image_path in images.items():
        data = base64.b64encode(Path(image_path).read_bytes()).decode("ascii")
        parts.append(
            f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts.append(f"<h2>Summary</h2><pre>{html.escape(json.dumps(summary, indent=2))}</pre></body></html>")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts))
    return Path(path)


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
