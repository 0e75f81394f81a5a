"""``brainuad demo``: the whole chain — data, preprocess, train, calibrate, detect, evaluate, report — on a laptop.

With no data it builds a **synthetic** cohort: T2 simulated from BrainWeb's 20 anatomies (:mod:`brainuad.data.mrsim`)
when their label files are found (``$BRAINUAD_BRAINWEB`` or ``../shared/data/brainweb``), else from the MNI tissue
maps nilearn ships (:mod:`brainuad.data.synthetic`); the report says which;
with ``data_dir`` it runs the same chain on a real folder: ``<data_dir>/healthy/`` holds healthy scans, and every
other sub-folder labelled cases (BraTS- or MS-style). Labelled cases are split by name into tuning cases (the
threshold is chosen on them) and test cases (reported), never mixed.

``minutes`` caps the whole run, preprocessing included: a scan is timed, the cohort size (``size="auto"``)
is the largest whose data and preprocessing fit the budget on this machine, and training stops when the time left
is what evaluation and detection are estimated to need (at least one step). ``demo.json`` records the settings and
each stage's time; a re-run with the same settings reuses what is finished, other settings start clean.
"""

from __future__ import annotations

import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from brainuad.config import Config, ModelConfig, PreprocessConfig, TrainConfig, replace
from brainuad.errors import BrainuadError, OutputError

if TYPE_CHECKING:
    from brainuad.infer.calibration import Calibration

#: Cohort sizes (healthy, tuning, test) per demo size (the network is
#: :func:`segment_recipe`'s at
#: every size; the time budget ends its training).
SIZES = {
    "tiny": (2, 1, 1),
    "small": (12, 2, 4),
    "standard": (40, 3, 9),
}
#: Data and preprocessing may take this share of the budget when the size is chosen from it; the rest trains.
FIXED_SHARE = 0.7
STAMP = "demo.json"
#: Everything the demo writes in its folder (a re-run with other settings removes these, and nothing else).
ENTRIES = ("data", "prep", "runs", "cache", "evaluation", "findings", "report.html", "roc.png", "pr.png", STAMP)

REAL_DATA_COMMANDS = """\
brainuad download ixi --out data/                       # the paper's healthy cohort (IXI T2)
brainuad preprocess data/IXI-T2 --out prep/ixi --jobs 2
brainuad train --data prep/ixi --out runs/ae512         # the paper's recipe; a GPU is strongly advised
brainuad calibrate --model runs/ae512                   # on the run's own validation split
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


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _real_layout(data_dir: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Healthy scans, tuning case folders and test case folders from a real data folder."""
    from brainuad.data.datasets import find_healthy_scans, find_labelled_cases

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
    (:func:`brainuad.data.mrsim.find_anatomies`), else the MNI template's tissue maps. The generator is one of the
    demo's
    settings, so a re-run never mixes the two (another generator starts clean)."""
    from functools import partial

    from brainuad.data.mrsim import SIMULATION_VERSION, find_anatomies, simulated_subject
    from brainuad.data.synthetic import synthetic_subject

    anatomies = find_anatomies()
    if anatomies:
        text = (
            f"T2 simulated from {len(anatomies)} BrainWeb anatomies in {anatomies[0].parent}, with skull "
            f"(brainuad.data.mrsim v{SIMULATION_VERSION})"
        )
        return text, partial(simulated_subject, anatomies=anatomies)
    return "T2-like contrast from the MNI template's tissue maps, skull-stripped", synthetic_subject


def prepare_folder(out: Path, settings: dict, progress: bool = False) -> dict | None:
    """Make ``out`` ready for a demo with ``settings``; return the earlier run's record when it can be reused.

    A folder holding a demo with the same settings is kept (finished stages are reused); one with other settings
    is cleared of what the demo wrote (and only that); a non-empty folder the demo did not write is refused.
    """
    from brainuad.io.volumes import ensure_writable_folder, read_json, write_json

    stamp = out / STAMP
    if out.exists() and not out.is_dir():
        raise OutputError(out, "exists and is not a folder")
    if stamp.is_file():
        try:
            previous = read_json(stamp)
        except BrainuadError:
            previous = {}
        if previous.get("settings") == settings:
            return previous
        _log(f"{out} holds a demo with other settings: removing its outputs and starting clean", progress)
        for name in ENTRIES:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    elif out.is_dir() and any(out.iterdir()):
        raise OutputError(out, "is not empty and was not written by 'brainuad demo'; choose a new --out")
    ensure_writable_folder(out)
    write_json(stamp, {"settings": settings, "complete": False})
    return None


def _choose_size(size: str, budget: float, spent: float, synth_s: float, prep_s: float) -> tuple[str, float]:
    """The cohort size (the largest whose data and preprocessing fit the budget when ``size`` is auto) and the
    estimated seconds of everything but training for it (two healthy scans are already done)."""

    def fixed(name: str) -> float:
        n = sum(SIZES[name])
        # Every scan is synthesised and preprocessed once; one test scan again by detect.
        return spent + synth_s * (n - 2) + prep_s * (n - 1)

    if size != "auto":
        return size, fixed(size)
    fitting = [name for name in SIZES if fixed(name) <= FIXED_SHARE * budget]
    chosen = fitting[-1] if fitting else "tiny"
    return chosen, fixed(chosen)


def run_demo(
    out_dir: str | Path = "brainuad-demo",
    minutes: float = 5.0,
    data_dir: str | Path | None = None,
    size: str = "auto",
    seed: int = 0,
    device=None,
    progress: bool = True,
) -> DemoResult:
    """Run the demo and write ``out_dir/report.html``.

    Args:
        out_dir: Everything goes here (data, preprocessed scans, runs, findings, evaluation, report).
        minutes: Cap on the whole run, preprocessing included (training takes what the other stages leave; at
            least one step, so a budget below this machine's smallest demo is exceeded, with a printed estimate).
        data_dir: A real data folder instead of synthetic data (see module docs).
        size: ``auto`` (the largest cohort that fits ``minutes``), ``tiny``, ``small`` or ``standard``: cohort and
            model size.
        seed: Seeds the synthetic data, the split and the training.
        device: A :class:`torch.device`, or ``auto``/``cpu``/``cuda`` (``None`` = ``auto``).
        progress: Print progress.
    """
    from brainuad import __version__
    from brainuad.data.synthetic import write_cohort
    from brainuad.infer.calibration import read_calibration
    from brainuad.io.volumes import read_json, write_json
    from brainuad.preprocess.pipeline import preprocess_batch
    from brainuad.train.device import resolve_device

    if size not in (*SIZES, "auto"):
        raise BrainuadError(f"unknown demo size {size!r}; choose from auto, {', '.join(SIZES)}")
    if minutes <= 0:
        raise BrainuadError("the demo's time budget (minutes) must be positive")
    start, cpu_start, budget = time.monotonic(), _cpu_seconds(), minutes * 60.0
    device = resolve_device(device or "auto")
    out = Path(out_dir)
    data = str(Path(data_dir).resolve()) if data_dir is not None else None
    generator, make_subject = _synthetic_generator() if data_dir is None else (None, None)
    settings = {"brainuad": __version__, "minutes": minutes, "data": data, "generator": generator, "size": size,
                "seed": seed, "device": device.type}  # fmt: skip
    previous = prepare_folder(out, settings, progress)
    if previous and previous.get("complete") and (out / "report.html").is_file():
        _log(f"{out} holds this demo, finished, with the same settings: reusing it (other settings redo it)", progress)
        summaries = {name: read_json(out / "evaluation" / name / "summary.json") for name in model_names()}
        return DemoResult(out / "report.html", summaries, time.monotonic() - start, previous["source"])
    record = {"settings": settings, "complete": False, "size_used": (previous or {}).get("size_used"), "seconds": {}}
    stage_start = time.monotonic()

    def stage_done(name: str) -> None:
        nonlocal stage_start
        record["seconds"][name] = round(time.monotonic() - stage_start, 1)
        stage_start = time.monotonic()
        write_json(out / STAMP, record)

    preprocess = PreprocessConfig(preset="paper-2mm")
    prep_healthy = out / "prep" / "healthy"
    timing = record.setdefault("scan_seconds", (previous or {}).get("scan_seconds") or {})
    if data_dir is None:
        if not timing:
            # Time a scan (synthesis, preprocessing) to size the cohort and the training to the budget: the second of
            # the two healthy scans every size needs, as the first also pays for loading templates and libraries.
            healthy_dir = out / "data" / "healthy"
            for i in (1, 2):
                first = time.monotonic()
                write_cohort(out / "data", i, 0, 0, seed=seed, subject=make_subject)
                timing["synthesis"] = time.monotonic() - first
            for i in (0, 1):
                first = time.monotonic()
                scan = healthy_dir / f"synth-healthy-{i:03d}.nii.gz"
                preprocess_batch([scan], prep_healthy, preprocess, progress=False)
                timing["preprocessing"] = time.monotonic() - first
        chosen, fixed_s = _choose_size(
            record["size_used"] or size, budget, time.monotonic() - start, timing["synthesis"], timing["preprocessing"]
        )
        record["size_used"] = chosen
        n_healthy, n_tune, n_test = SIZES[chosen]
        _log(
            f"budget {minutes:g} min; a scan takes {timing['synthesis']:.0f} s to synthesise and "
            f"{timing['preprocessing']:.0f} s to preprocess: size '{chosen}' ({n_healthy} healthy, {n_tune} tuning, "
            f"{n_test} test scans): data and preprocessing ≈ {fixed_s / 60:.1f} min, training the remaining "
            f"≈ {max(0.0, budget - fixed_s) / 60:.1f} min (at least one step)",
            progress,
        )
        if fixed_s > budget:
            _log(f"the budget is below this machine's smallest demo: expect ≈ {fixed_s / 60:.1f} min", progress)
        _log(f"building a SYNTHETIC cohort ({generator}; healthy brains, planted lesions)", progress)
        cohort = write_cohort(out / "data", n_healthy, n_tune, n_test, seed=seed, subject=make_subject)
        healthy: list[Path] = [cohort.healthy]
        tune_dirs, test_dirs = [cohort.tuning], [cohort.test]
        test_scans = sorted(cohort.test.glob("*/*_t2.nii.gz"))
        n_labelled = n_tune + n_test
        source = f"synthetic: {generator}"
    else:
        chosen = record["size_used"] = "small" if size == "auto" else size
        healthy, tune_dirs, test_dirs = _real_layout(Path(data_dir))
        test_scans = [next(iter(sorted(d.glob("*t2*.nii*")) + sorted(d.glob("T2*.nii*"))), None) for d in test_dirs]
        test_scans = [p for p in test_scans if p is not None]
        n_labelled = len(tune_dirs) + len(test_dirs)
        source = str(data_dir)
    stage_done("data")

    _log("preprocessing the healthy scans (skull strip, rigid registration to MNI, crop, scaling)", progress)
    first = time.monotonic()
    result = preprocess_batch(healthy, prep_healthy, preprocess, progress=progress)
    if not result.done + result.skipped:
        raise BrainuadError(f"no healthy scan could be preprocessed: {result.failed}")
    if result.done:
        # Per scan once the libraries are loaded (the first scan's time also paid for loading them).
        timing["preprocessing"] = (time.monotonic() - first) / len(result.done)
    stage_done("preprocess")

    # What is left after training: preprocessing every labelled case once (evaluation caches them) and one test
    # scan again for detect, plus a little for inference and the report.
    later_s = timing.get("preprocessing", 10.0) * (n_labelled + 1) * 1.2 + 5.0
    deadline = start + budget - later_s
    # Self-supervised anomaly segmentation (issue #33): it predicts where synthetic anomalies were planted, so it
    # learns something a healthy mean image cannot give within the demo's minutes of training on a CPU (the quick
    # recipe's autoencoder did not: "learned nothing beyond the healthy mean image"). The time budget ends training.
    recipe = segment_recipe()
    config = Config(
        preprocessing=preprocess, model=recipe.model,
        training=replace(recipe.training, seed=seed, device=device.type),
    )  # fmt: skip
    learned, baseline_kind = model_names()
    run = out / "runs" / learned
    _train(prep_healthy, run, config, deadline, progress)
    baseline = out / "runs" / baseline_kind
    if not (baseline / "summary.json").is_file():
        shutil.rmtree(baseline, ignore_errors=True)  # a baseline cut off before it finished (the demo wrote it)
        _train(prep_healthy, baseline, replace(config, model=ModelConfig(kind=baseline_kind)), None, False)
    stage_done("train")

    summaries, findings = _calibrate_evaluate_detect(
        out, run, baseline, tune_dirs, test_dirs, test_scans, device, seed, progress, stage_done
    )
    report = write_demo_report(out, summaries, findings, source, read_calibration(run))
    stage_done("report")
    record.update(complete=True, source=source, wall_seconds=round(time.monotonic() - start, 1),
                  cpu_seconds=round(_cpu_seconds() - cpu_start, 1), budget_seconds=budget)  # fmt: skip
    write_json(out / STAMP, record)
    seconds = time.monotonic() - start
    _log(f"done in {seconds / 60:.1f} minutes (budget {minutes:g}): open {report}", progress)
    return DemoResult(report, summaries, seconds, source)


def segment_recipe() -> Config:
    """The demo's learned model: self-supervised anomaly segmentation (``segment``), a GroupNorm U-Net (stem 8,
    channels 16-32-64) on random 48³ patches of batch 4, AdamW at a constant 1e-3 after 20 warm-up steps, the
    held-out task validated every 20 steps on 20 % of the scans. The demo's time budget, not the step count, ends it
    (benchmarks/lesions.py's ``segment`` is the same network and training, with a 55-minute budget)."""
    learned, _ = model_names()
    return Config(
        model=ModelConfig(
            kind=learned, stem_channels=8, channels=(16, 32, 64),
            options={"patch_size": (48, 48, 48), "val_every_steps": 20},
        ),
        training=TrainConfig(
            epochs=1, steps_per_epoch=100_000, batch_size=4, lr=1e-3, lr_schedule="constant", warmup_steps=20,
            augment="off", val_fraction=0.2,
        ),
    )  # fmt: skip


def model_names() -> tuple[str, str]:
    """The demo's learned model and its baseline, as registered (their run and evaluation folders are named so)."""
    from brainuad.models.intensity import INTENSITY
    from brainuad.models.segment import METHODS

    return METHODS[0].name, INTENSITY.name


def _train(data: Path, run: Path, config: Config, deadline: float | None, progress: bool) -> None:
    """Train (or finish training) the demo's model in ``run`` until ``deadline``; a finished run is kept."""
    from brainuad.io.volumes import read_json
    from brainuad.train.loop import train

    if (run / "summary.json").is_file() and (run / "model.safetensors").is_file():
        return  # finished by an earlier run with the same settings
    from brainuad.models.base import get_method

    method = get_method(config.model.kind)
    resume = (run / "state.json").is_file() and method.resumable
    if not resume and run.exists():
        shutil.rmtree(run)  # cut off before it finished (the demo wrote it); a method that cannot resume starts again
    if method.learns:
        left = (deadline - time.monotonic()) / 60 if deadline else 0.0
        _log(f"training {method.name} ({method.summary}) on healthy scans only, for ≈ {max(left, 0):.1f} min",
             progress)  # fmt: skip
    train([data], run, config, resume=resume, progress=progress, deadline=deadline)
    if method.learns:
        from brainuad.train.guard import passed_text, read_check

        summary = read_json(run / "summary.json")
        _log(f"trained {summary['epochs_done']} step(s) in {summary['train_seconds']:.0f} s", progress)
        verdict = passed_text(read_check(run, strict=False))
        if verdict:
            _log(verdict, progress)


def _calibrate_evaluate_detect(out, run, baseline, tune_dirs, test_dirs, test_scans, device, seed, progress, done):
    from brainuad.evaluate.calibrate import calibrate
    from brainuad.evaluate.evaluation import evaluate
    from brainuad.infer.detect import detect_batch

    calibration = calibrate(run, None, device=device)  # on the run's own validation split
    calibrate(baseline, None, device=device)
    _log(f"calibrated on {calibration.calibrated_on}", progress)
    for note in calibration.notes or ():
        _log(f"note: {note}", progress)
    done("calibrate")
    summaries = {}
    learned, _ = model_names()
    for name, model_dir in zip(model_names(), (run, baseline)):
        _log(f"evaluating {name} (threshold tuned on the tuning cases, reported on the test cases)", progress)
        summaries[name] = evaluate(
            model_dir, test_dirs, out / "evaluation" / name, tune_sources=tune_dirs,
            cache_dir=out / "cache", device=device, progress=progress, seed=seed,
        )  # fmt: skip
    done("evaluate")
    # The same threshold as the results table (tuned on the tuning cases), so the panels and the Dice agree.
    threshold = float(summaries[learned]["threshold"]["value"])
    _log(f"detecting anomalies in the first test scan at the tuned threshold {threshold:.3g}", progress)
    findings = detect_batch(
        test_scans[:1], run, out / "findings", threshold, device=device, progress=progress,
        threshold_source=f"the evaluation's: {summaries[learned]['threshold']['source']}",
    )  # fmt: skip
    done("detect")
    return summaries, findings.done + findings.skipped


def write_demo_report(
    out: Path, summaries: dict, findings: list[Path], source: str, calibration: Calibration | None = None
) -> Path:
    """``out/report.html``: the data's origin, the results table, the methods' ROC/PR curves, a detection and its
    lesion table (the one detect's own report shows)."""
    import html

    import numpy as np

    from brainuad.evaluate.evaluation import TABLE_HEADER, table_row
    from brainuad.infer.detect import learned_nothing_warning, lesion_section
    from brainuad.io.files import read_json
    from brainuad.report.figures import plot_pr_curves, plot_roc_curves
    from brainuad.report.html import html_report
    from brainuad.train.guard import passed_text, read_check

    curves = {}
    for name in summaries:
        scores = np.load(out / "evaluation" / name / "slice_scores.npz")
        curves[name] = (scores["abnormal"], scores["score"])
    plot_roc_curves(curves, out / "roc.png", "slice-level ROC, test cases")
    plot_pr_curves(curves, out / "pr.png", "slice-level precision-recall (abnormal class), test cases")
    images = {"Slice-level ROC (brain-containing axial slices)": out / "roc.png", "Slice-level PR": out / "pr.png"}
    sections: dict[str, str] = {}
    for folder in findings:
        title = f"{folder.name}: largest findings, most abnormal slices (input, reconstruction, heatmap, segmentation)"
        images[title] = folder / "figure_rows.png"
        sections.update(lesion_section(read_json(folder / "summary.json")["lesions"], folder.name))
    table = TABLE_HEADER + "".join(table_row(name, s) for name, s in summaries.items())
    synthetic = source.startswith("synthetic")
    learned, _ = model_names()
    threshold = summaries[learned]["threshold"]
    notes = [
        f"<b>The data are SYNTHETIC</b> ({html.escape(source.removeprefix('synthetic: '))}, with planted lesions): "
        "the numbers show the chain working, not how brainuad performs on patients." if synthetic else
        f"Data: {html.escape(source)}.",
        f"Thresholds were tuned on the tuning cases only ({html.escape(str(threshold['source']))}); the table reports "
        f"the test cases. The detection panels use the same {learned} threshold, {threshold['value']:.4g}. "
        "Intervals: 95% bootstrap over cases. Metric definitions: see the README.",
    ]  # fmt: skip
    if calibration is not None:
        notes.append(
            "Healthy calibration (calibrated z-scores, scan percentile): on "
            + html.escape(str(calibration.calibrated_on))
            + "".join(f"; <b>{html.escape(n)}</b>" for n in calibration.notes or ())
            + "."
        )
    notes.append("To run the same chain on real data:<pre>" + html.escape(REAL_DATA_COMMANDS) + "</pre>")
    summary = {"data": source, f"threshold ({learned}, tuned)": threshold["value"],
               "threshold source": threshold["source"]}  # fmt: skip
    warning = learned_nothing_warning(out / "runs" / learned)
    banner = html.escape(warning) if warning else None
    passed = passed_text(read_check(out / "runs" / learned, strict=False))
    if passed:
        notes.insert(0, f"<b>{html.escape(passed)}</b>")
    return html_report(
        "brainuad demo",
        summary,
        images,
        out / "report.html",
        notes=notes,
        table=table,
        banner=banner,
        sections=sections,
    )
