"""``brainuad demo``: the whole chain — data, preprocess, train, calibrate, detect, evaluate, report — on a laptop.

With no data it builds a **synthetic** cohort: T2 simulated from BrainWeb's 20 anatomies (:mod:`brainuad.mrsim`)
when their label files are found (``$BRAINUAD_BRAINWEB`` or ``../shared/data/brainweb``), else from the MNI tissue
maps nilearn ships (:mod:`brainuad.synthetic`); the report says which;
with ``data_dir`` it runs the same chain on a real folder: ``<data_dir>/healthy/`` holds healthy scans, and every
other sub-folder labelled cases (BraTS- or MS-style). Labelled cases are split by name into tuning cases (the
threshold is chosen on them) and test cases (reported), never mixed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from brainuad.config import Config, ModelConfig, PreprocessConfig, TrainConfig, replace
from brainuad.errors import BrainuadError

#: Cohort sizes (healthy, tuning, test) and model widths per demo size.
SIZES = {
    "tiny": ((2, 1, 1), (4, 8, 8, 16), 32),
    "small": ((12, 2, 4), (8, 16, 32, 64), 128),
    "standard": ((40, 3, 9), (16, 32, 64, 128), 256),
}

REAL_DATA_COMMANDS = """\
brainuad download ixi --out data/                       # the paper's healthy cohort (IXI T2)
brainuad preprocess data/IXI-T2 --out prep/ixi --jobs 2
brainuad train --data prep/ixi --out runs/ae512         # the paper's recipe; a GPU is strongly advised
brainuad calibrate --model runs/ae512 --healthy <validation cases listed in runs/ae512/split.json>
brainuad detect patients/ --model runs/ae512 --out findings/
brainuad evaluate --model runs/ae512 --cases labelled/test --tune-cases labelled/tuning --out evaluation/"""


@dataclass
class DemoResult:
    """Where the demo put its report and what it measured."""

    report: Path
    summaries: dict
    seconds: float
    data: str = "synthetic"


def _log(message: str, progress: bool) -> None:
    if progress:
        print(f"[demo] {message}", flush=True)


def _real_layout(data_dir: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Healthy scans, tuning case folders and test case folders from a real data folder."""
    from brainuad.data import find_healthy_scans, find_labelled_cases

    healthy_dir = data_dir / "healthy"
    if not healthy_dir.is_dir():
        raise BrainuadError(f"{data_dir}: expected a 'healthy/' folder of healthy scans beside the labelled cases")
    healthy = [s.path for s in find_healthy_scans(healthy_dir)]
    cases = []
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir() and p != healthy_dir):
        try:
            cases.extend(find_labelled_cases(folder))
        except BrainuadError:
            continue  # a folder without T2 cases (e.g. templates, FLAIR-only)
    if len(cases) < 2:
        raise BrainuadError(f"{data_dir}: need at least two labelled T2 cases (one to tune, one to report)")
    cases = sorted(cases, key=lambda c: c.name)
    n_tune = max(1, len(cases) // 3)
    folders = [c.image_path.parent for c in cases]
    return healthy, folders[:n_tune], folders[n_tune:]


def _synthetic_generator():
    """How the synthetic cohort is made: T2 simulated from BrainWeb anatomies when they are found
    (:func:`brainuad.mrsim.find_anatomies`), else the MNI template's tissue maps. Each has its own data folder, so
    a re-run never mixes the two."""
    from functools import partial

    from brainuad.mrsim import find_anatomies, simulated_subject
    from brainuad.synthetic import synthetic_subject

    anatomies = find_anatomies()
    if anatomies:
        text = f"T2 simulated from {len(anatomies)} BrainWeb anatomies in {anatomies[0].parent}, with skull"
        return text, partial(simulated_subject, anatomies=anatomies), "data-brainweb"
    return "T2-like contrast from the MNI template's tissue maps, skull-stripped", synthetic_subject, "data"


def run_demo(
    out_dir: str | Path = "brainuad-demo",
    minutes: float = 5.0,
    data_dir: str | Path | None = None,
    size: str = "small",
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> DemoResult:
    """Run the demo and write ``out_dir/report.html``.

    Args:
        out_dir: Everything goes here (data, preprocessed scans, runs, findings, evaluation, report).
        minutes: Training time budget (the number of epochs is set from the first epoch's duration).
        data_dir: A real data folder instead of synthetic data (see module docs).
        size: ``tiny`` (CI), ``small`` (default) or ``standard``: cohort and model size.
        seed: Seeds the synthetic data, the split and the training.
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: Print progress.
    """
    from brainuad.detect import detect_batch
    from brainuad.evaluation import evaluate
    from brainuad.inference import calibrate
    from brainuad.io import read_json
    from brainuad.preprocessing import preprocess_batch
    from brainuad.synthetic import write_cohort
    from brainuad.training import train

    if size not in SIZES:
        raise BrainuadError(f"unknown demo size {size!r}; choose from {sorted(SIZES)}")
    start = time.perf_counter()
    out = Path(out_dir)
    (n_healthy, n_tune, n_test), channels, latent = SIZES[size]
    if data_dir is None:
        generator, make_subject, folder = _synthetic_generator()
        _log(f"building a SYNTHETIC cohort ({generator}): {n_healthy} healthy, {n_tune} tuning and {n_test} test "
             "scans", progress)  # fmt: skip
        cohort = write_cohort(out / folder, n_healthy, n_tune, n_test, seed=seed, subject=make_subject)
        healthy: list[Path] = [cohort.healthy]
        tune_dirs, test_dirs = [cohort.tuning], [cohort.test]
        test_scans = sorted(cohort.test.glob("*/*_t2.nii.gz"))
        source = f"synthetic: {generator}"
    else:
        healthy, tune_dirs, test_dirs = _real_layout(Path(data_dir))
        test_scans = [next(iter(sorted(d.glob("*t2*.nii*")) + sorted(d.glob("T2*.nii*"))), None) for d in test_dirs]
        test_scans = [p for p in test_scans if p is not None]
        source = str(data_dir)

    preprocess = PreprocessConfig(preset="paper-2mm")
    _log("preprocessing the healthy scans (skull strip, rigid registration to MNI, crop, scaling)", progress)
    result = preprocess_batch(healthy, out / "prep" / "healthy", preprocess, progress=progress)
    if not result.done + result.skipped:
        raise BrainuadError(f"no healthy scan could be preprocessed: {result.failed}")

    config = Config(
        preprocessing=preprocess,
        model=ModelConfig(stem_channels=channels[0], channels=channels, latent=latent),
        training=TrainConfig(
            epochs=1, batch_size=4, lr=5e-4, seed=seed, device=device, steps_per_epoch=2 if size == "tiny" else 8
        ),
    )
    run = out / "runs" / "ae"
    resume = (run / "state.json").is_file()
    first = time.perf_counter()
    if not resume:
        _log("training the autoencoder on healthy scans only", progress)
        train([out / "prep" / "healthy"], run, config, progress=progress)
    epoch_seconds = max(time.perf_counter() - first, 1e-3)
    epochs = max(2, int(minutes * 60 / epoch_seconds))
    _log(f"one epoch took {epoch_seconds:.1f} s: training {epochs} epochs to fit {minutes:g} minutes", progress)
    train([out / "prep" / "healthy"], run, replace(config, training=replace(config.training, epochs=epochs)),
          resume=True, progress=progress)  # fmt: skip
    baseline = out / "runs" / "intensity"
    if not (baseline / "model.safetensors").is_file():
        train(
            [out / "prep" / "healthy"], baseline, replace(config, model=ModelConfig(kind="intensity")), progress=False
        )

    validation = read_json(run / "split.json")["val"]
    _log("calibrating on the held-out healthy validation scans", progress)
    calibrate(run, validation, device=device)
    calibrate(baseline, validation, device=device)

    summaries = {}
    for name, model_dir in (("ae", run), ("intensity", baseline)):
        _log(f"evaluating {name} (threshold tuned on the tuning cases, reported on the test cases)", progress)
        summaries[name] = evaluate(
            model_dir, test_dirs, out / "evaluation" / name, tune_sources=tune_dirs,
            cache_dir=out / "cache", device=device, progress=progress, seed=seed,
        )  # fmt: skip
    _log("detecting anomalies in the first test scan (outputs in its own space and in MNI space)", progress)
    findings = detect_batch(test_scans[:1], run, out / "findings", device=device, progress=progress)
    report = write_demo_report(out, summaries, findings.done + findings.skipped, source)
    seconds = time.perf_counter() - start
    _log(f"done in {seconds / 60:.1f} minutes: open {report}", progress)
    return DemoResult(report, summaries, seconds, source)


def write_demo_report(out: Path, summaries: dict, findings: list[Path], source: str) -> Path:
    """``out/report.html``: the data's origin, the results table, the methods' ROC/PR curves, a detection."""
    import html

    import numpy as np

    from brainuad.evaluation import TABLE_HEADER, table_row
    from brainuad.figures import html_report, plot_pr_curves, plot_roc_curves

    curves = {}
    for name in summaries:
        scores = np.load(out / "evaluation" / name / "slice_scores.npz")
        curves[name] = (scores["abnormal"], scores["score"])
    plot_roc_curves(curves, out / "roc.png", "slice-level ROC, test cases")
    plot_pr_curves(curves, out / "pr.png", "slice-level precision-recall (abnormal class), test cases")
    images = {"Slice-level ROC (brain-containing axial slices)": out / "roc.png", "Slice-level PR": out / "pr.png"}
    for folder in findings:
        images[f"{folder.name}: most abnormal slices (input, reconstruction, heatmap, segmentation)"] = (
            folder / "figure_rows.png"
        )
    table = TABLE_HEADER + "".join(table_row(name, s) for name, s in summaries.items())
    synthetic = source.startswith("synthetic")
    notes = [
        f"<b>The data are SYNTHETIC</b> ({html.escape(source.removeprefix('synthetic: '))}, with planted lesions): "
        "the numbers show the chain working, not how brainuad performs on patients." if synthetic else
        f"Data: {html.escape(source)}.",
        "Thresholds were tuned on the tuning cases only; the table reports the test cases. "
        "Intervals: 95% bootstrap over cases. Metric definitions: see the README.",
        "To run the same chain on real data:<pre>" + html.escape(REAL_DATA_COMMANDS) + "</pre>",
    ]  # fmt: skip
    summary = {"results_table_markdown": table, "data": source}
    return html_report("brainuad demo", summary, images, out / "report.html", notes=notes, table=table)
