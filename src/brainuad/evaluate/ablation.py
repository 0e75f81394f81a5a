"""``brainuad ablate``: the paper's latent ablation — dense z ∈ {128, 256, 512, 1024} and a spatial latent with 1–64
channels — trained, calibrated and evaluated the same way, with the paper's Figure 4 (ROC and PR curves of every
variant) and Figure 5 (each variant's reconstruction of one abnormal slice).

Outputs in ``DIR/``: ``runs/<variant>/`` (run folders), ``evaluation/<variant>/``, ``table.md``, ``summary.json``,
``figure4_roc.png``, ``figure4_pr.png``, ``figure5_reconstructions.png``. Finished variants are reused on re-run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainuad.config import Config, replace


def variants(base: Config, latents: list[int], spatial_channels: list[int]) -> dict[str, Config]:
    """Name → config of every ablation variant (the base config's training settings, its model widths)."""
    from brainuad.models.ae import DENSE, SPATIAL

    found = {f"dense-z{z}": replace(base, model=replace(base.model, kind=DENSE.name, latent=z)) for z in latents}
    for c in spatial_channels:
        found[f"spatial-c{c}"] = replace(base, model=replace(base.model, kind=SPATIAL.name, spatial_channels=c))
    return found


def ablate(
    data: list[str | Path],
    cases: list[str | Path],
    out_dir: str | Path,
    base: Config,
    tune_cases: list[str | Path] | None = None,
    latents: list[int] | tuple[int, ...] = (128, 256, 512, 1024),
    spatial_channels: list[int] | tuple[int, ...] = (1, 4, 16, 64),
    modality: str = "t2",
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Train, calibrate and evaluate every variant; write the table and Figures 4 and 5.

    Args:
        data: Preprocessed healthy cases (as for ``train``).
        cases: Labelled cases to report.
        out_dir: Output folder.
        base: Training settings (and model widths) shared by every variant.
        tune_cases: Labelled cases for the threshold (else each run's healthy-validation calibration is used).
        latents: Dense latent sizes.
        spatial_channels: Spatial latent channel counts.
        modality: Modality of the labelled case files.
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: Progress bars.

    Returns:
        Variant name → evaluation summary (also written to ``summary.json``).
    """
    from brainuad.evaluate.calibrate import calibrate
    from brainuad.evaluate.evaluation import TABLE_HEADER, evaluate, table_row
    from brainuad.io.volumes import atomic_path, write_json
    from brainuad.report.figures import plot_pr_curves, plot_roc_curves
    from brainuad.train.loop import train

    out = Path(out_dir)
    summaries: dict[str, dict] = {}
    curves = {}
    for name, config in variants(base, list(latents), list(spatial_channels)).items():
        run = out / "runs" / name
        if not (run / "summary.json").is_file():
            train(data, run, config, resume=(run / "state.json").is_file(), progress=progress)
        calibrate(run, device=device)  # its own validation split
        summaries[name] = evaluate(
            run, cases, out / "evaluation" / name, tune_sources=tune_cases, modality=modality,
            cache_dir=out / "cache", device=device, progress=progress,
        )  # fmt: skip
        scores = np.load(out / "evaluation" / name / "slice_scores.npz")
        curves[name] = (scores["abnormal"], scores["score"])
    plot_roc_curves(curves, out / "figure4_roc.png", "Figure 4: slice ROC per latent variant")
    plot_pr_curves(curves, out / "figure4_pr.png", "Figure 4: slice PR (abnormal class) per latent variant")
    _figure5(out, list(summaries), cases, modality, device)
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(TABLE_HEADER + "".join(table_row(name, s) for name, s in summaries.items()))
    write_json(out / "summary.json", summaries)
    return summaries


def _figure5(out: Path, names: list[str], cases: list[str | Path], modality: str, device: str) -> Path:
    """Each variant's reconstruction of the most lesioned axial slice of the first reported case."""
    from brainuad.data.datasets import find_labelled_cases
    from brainuad.evaluate.labelled import lesion_on_crop
    from brainuad.infer.inference import reconstruct
    from brainuad.infer.trained import TrainedModel
    from brainuad.io.volumes import safe_name
    from brainuad.preprocess.cases import load_case
    from brainuad.report.figures import plot_reconstruction_panel
    from brainuad.train.device import resolve_device

    case = find_labelled_cases(cases[0], modality)[0]
    pre = load_case(out / "cache" / "cases" / safe_name(case.name))
    if case.label_path is not None:
        lesion, _ = lesion_on_crop(case, pre)
        u = int(np.argmax(lesion.sum(axis=(0, 1))))
    else:
        u = pre.image.shape[2] // 2
    torch_device = resolve_device(device)
    reconstructions = {}
    for name in names:
        trained = TrainedModel.load(out / "runs" / name, torch_device)
        reconstructions[name] = reconstruct(trained.model, pre.image.array, torch_device)[:, :, u]
    return plot_reconstruction_panel(
        pre.image.array[:, :, u], reconstructions, out / "figure5_reconstructions.png", f"{case.name}, axial slice {u}"
    )
