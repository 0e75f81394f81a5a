"""Retrain a shipped model (``builtin:t1``, ``builtin:t2``, ``builtin:flair``) from ../shared/data and compare it
with its card.

Usage (from the repository root):
    python benchmarks/builtin_models.py t2 [--out benchmarks/out/builtin_t2] [--epochs N]
    python benchmarks/builtin_models.py t1 [--prep /work/prep/t1_2mm]
    python benchmarks/builtin_models.py flair
    ... --install      # also write the result into src/brainuad/builtin/<name>/ (fp16 weights, config, card)
    python benchmarks/builtin_models.py --docs-only   # only the README's model facts, from the installed cards
    python benchmarks/builtin_models.py t1 --contrast-reference   # add the CSF/WM reference its calibration lacks

t2 and flair ship the method that measured best on the two tuning cases among those benchmarks/lesions.py evaluated
on that track (best pooled Dice; docs/results.md) — t2: ``restore`` (0.594, over the quick-recipe ae's 0.478,
normative's 0.493 and intensity's 0.470); flair: the intensity baseline (0.503, over normative's and restore-aug's
0.116) — trained on the scans lesions.py simulates (t2: plus IXI002 and three templates); t1 trains the quick recipe
(no other T1 method was trained on the same split).

Training uses the quick recipe (``brainuad train --recipe quick``, its 8 epochs × 50 steps unless ``--epochs``), on
2 threads. Steps: (1) data — t2: T2 simulated from 16 BrainWeb anatomies (1 scan each: random
1.5/3 T sequence, pose, 1–2 mm in-plane, thick slices, skull-stripped) plus IXI002's T2 and the three T2 templates;
calibration: 4 other anatomies (1 scan each), never trained on. t1: the 52 real healthy IXI T1 individuals, split
by ``benchmarks/splits/t1_2mm.json`` when it exists (else a seeded 80/20 split), calibration on the held-out
part. All preprocessed with ``paper-2mm``. (2) train, (3) calibrate (healthy voxel FPR 1e-3), (4) evaluate on the
shared labelled cases, with the shipped calibration's threshold and with the docs/results.md protocol (threshold
tuned on the first two BraTS cases, reported on the others + stroke + MS), the intensity baseline beside it, (5)
detect on one shared raw scan (the card's reference number), (6) compare with the shipped ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
BUILTIN = ROOT / "src" / "brainuad" / "builtin"
T1_FOLDERS = ["healthy_t1/ixi_2mm", "healthy_t1/ixi_1mm/brain", "healthy_t1/ixi_1mm/head"]
T1_EXTRA = ["healthy/IXI002-Guys-0828-T1_brain.nii.gz", "healthy/IXI012-HH-1211-T1_2mm_head.nii.gz",
            "healthy/IXI015-HH-1258-T1_2mm_head.nii.gz"]  # fmt: skip
REFERENCE_SCAN = {"t2": "stroke/T2_head.nii.gz", "t1": "brats2018/Brats18_2013_3_1/Brats18_2013_3_1_t1.nii.gz",
                  "flair": "brats2018/Brats18_2013_3_1/Brats18_2013_3_1_flair.nii.gz"}  # fmt: skip
#: The recipe of each shipped model: ``quick`` = ``brainuad train --recipe quick`` (the ae); otherwise a recipe of
#: benchmarks/lesions.py, the learned method that measured best on that track's tuning cases (docs/results.md).
RECIPE = {"t2": "restore", "t1": "segment-cr", "flair": "intensity"}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def prepare_simulated(name: str, out: Path) -> tuple[list[Path], list[Path], dict]:
    """The T2 or FLAIR training and calibration scans of benchmarks/lesions.py (simulated, preprocessed under
    ``out``: the same seeds, so the same scans); returns their preprocessed folders and the data record."""
    import lesions

    from brainuad.data import mrsim

    lesions.prepare(name, out)
    prep = out / name / "prep"
    anatomies = mrsim.find_anatomies(DATA / "brainweb")
    data = {
        "train": [p.name for p in sorted((prep / "train").iterdir()) if p.is_dir()],
        "calibration": [p.name for p in sorted((prep / "cal").iterdir()) if p.is_dir()],
        "simulation_version": mrsim.SIMULATION_VERSION,
        "train_anatomies": [p.name for p in anatomies[:16]],
        "calibration_anatomies": [p.name for p in anatomies[16:]],
    }
    return [prep / "train"], [prep / "cal"], data


def prepare_t1(out: Path, prep: Path | None, split_file: Path) -> tuple[list[Path], list[Path], dict]:
    """Preprocess (or reuse) the 52 real T1 individuals and split them into training and calibration folders."""
    from brainuad.config import PreprocessConfig
    from brainuad.preprocess.pipeline import preprocess_batch

    if prep is None:
        inputs = [DATA / f for f in T1_FOLDERS] + [DATA / f for f in T1_EXTRA]
        prep = out / "prep" / "all"
        result = preprocess_batch(inputs, prep, PreprocessConfig(preset="paper-2mm"), progress=False)
        if result.failed:
            raise SystemExit(f"preprocessing failed: {result.failed}")
    cases = sorted(p for p in prep.iterdir() if p.is_dir() and (p / "image.nii.gz").is_file())
    if split_file.is_file():  # subject ids (IXI123): train → training, val → calibration; test stays unseen
        split = json.loads(split_file.read_text())
        subject = {c.name: c.name.split("-")[0] for c in cases}
        train_names = {c.name for c in cases if subject[c.name] in split["train"]}
        cases = [c for c in cases if subject[c.name] in split["train"] or subject[c.name] in split["val"]]
        source = f"benchmarks/splits/{split_file.name} (train → training, val → calibration; its test subjects unused)"
    else:
        order = np.random.default_rng(0).permutation(len(cases))
        train_names = {cases[i].name for i in order[: round(0.8 * len(cases))]}
        source = "seeded 80/20 split (seed 0)"
    for name, chosen in (("train", [c for c in cases if c.name in train_names]),
                         ("cal", [c for c in cases if c.name not in train_names])):  # fmt: skip
        folder = out / "split" / name
        folder.mkdir(parents=True, exist_ok=True)
        for case in chosen:
            link = folder / case.name
            if not link.exists():
                link.symlink_to(case.resolve(), target_is_directory=True)
    data = {
        "train": sorted(c.name for c in cases if c.name in train_names),
        "calibration": sorted(c.name for c in cases if c.name not in train_names),
        "split": source,
    }
    return [out / "split" / "train"], [out / "split" / "cal"], data


def _tuning_dice(threshold_source: str) -> float | None:
    """The tuning cases' best pooled Dice an evaluation's threshold source states, or ``None``."""
    found = re.search(r"best pooled Dice \(([0-9.]+)\) on", threshold_source)
    return float(found.group(1)) if found else None


def _previous_tuning_dice(name: str) -> dict[str, float]:
    """The tuning cases' best pooled Dice of the model shipped as ``builtin:NAME`` until now (its installed
    metrics.json), named ``RECIPE (previous builtin:NAME)``; empty when none is installed or it names no such Dice."""
    path = BUILTIN / name / "metrics.json"
    if not path.is_file():
        return {}
    metrics = json.loads(path.read_text())
    dice = _tuning_dice(metrics["evaluation"]["model"]["results_protocol"].get("threshold_source", ""))
    return {} if dice is None else {f"{metrics['training']['recipe']['name']} (previous builtin:{name})": dice}


def train_model(name: str, out: Path, train_dirs: list[Path], epochs: int | None, device: str = "cpu") -> dict:
    """Train the shipped model's recipe into ``out/run`` on every training scan: no validation split, so the
    calibration scans stay unseen. ``quick``: benchmarks/README.md measures it on held-out real T1 individuals."""
    import torch

    from brainuad.config import PreprocessConfig, quick_recipe, replace, to_dict
    from brainuad.io.volumes import read_json
    from brainuad.train.loop import train

    torch.set_num_threads(2)
    run = out / "run"
    if RECIPE[name] != "quick":
        import lesions

        # lesions.py trains (or reuses) the run under out/<name>/runs/ and records its cost; out/run points there.
        trained = lesions.train_method(name, RECIPE[name], out, epochs)
        if not run.exists():
            run.symlink_to(trained.resolve(), target_is_directory=True)
        config, cost, summary = (read_json(trained / f) for f in ("config.json", "cost.json", "summary.json"))
        tc = config["training"]
        # What chose the recipe: each FLAIR method's best pooled Dice on the tuning cases (lesions.py evaluations).
        sources = {
            p.parent.name: read_json(p)["threshold"]["source"] for p in (out / name / "eval").glob("*/summary.json")
        }
        found = {m: _tuning_dice(text) for m, text in sources.items()}
        tuning_dice = {m: dice for m, dice in found.items() if dice is not None} | _previous_tuning_dice(name)
        tuning_dice = dict(sorted(tuning_dice.items(), key=lambda kv: -kv[1]))
        resumable = config["model"]["kind"] != "segment"  # segment's own loop never resumes: cost.json is whole
        if resumable and (trained / "log.csv").is_file():  # resumed: cost.json holds the last process; log.csv all
            import csv

            with open(trained / "log.csv") as handle:
                epochs_wall = sum(float(row["seconds"]) for row in csv.DictReader(handle))
            if epochs_wall > cost["wall_seconds"]:
                cost = {**cost, "wall_seconds": round(epochs_wall, 1), "cpu_seconds_note": "the last resumed part only"}
        return {
            "tuning_dice": tuning_dice,
            "epochs": summary["epochs_done"],
            # segment runs its own loop: summary.json counts its steps (its "epoch" is the whole run)
            "steps": summary["epochs_done"] * (1 if config["model"]["kind"] == "segment" else tc["steps_per_epoch"]),
            "batch_size": tc["batch_size"],
            **cost,
            "device": "cpu",
            "recipe": {
                "name": RECIPE[name],
                "model": config["model"],
                "training": tc,
                "postprocessing": config.get("postprocessing"),
            },
        }
    recipe = quick_recipe()
    training = replace(
        recipe.training, epochs=epochs or recipe.training.epochs, val_fraction=0.0, device=device, seed=0,
        val_every=100_000,  # validation would be the training scans: only after the last epoch
    )  # fmt: skip
    config = replace(recipe, preprocessing=PreprocessConfig(preset="paper-2mm"), training=training)
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    train(train_dirs, run, config, resume=(run / "state.json").is_file(), progress=False)
    return {
        "epochs": training.epochs,
        "steps": training.epochs * training.steps_per_epoch,
        "batch_size": training.batch_size,
        "wall_seconds": round(time.perf_counter() - wall0, 1),
        "cpu_seconds": round(_cpu_seconds() - cpu0, 1),
        "threads": 2,
        "device": device,
        "recipe": {"name": "quick", "model": to_dict(config.model), "training": to_dict(training)},
    }


def _held_out_mse(run: Path, train_dirs: list[Path], cal_dirs: list[Path]) -> dict:
    """On the calibration scans: a reconstruction model's mean squared error in the brain against the mean training
    image's; a restoration model (which passes healthy tissue through) its own self-check instead — anomalies
    planted with a fixed seed, the error left in them after restoration against before."""
    import torch

    from brainuad.data.datasets import find_case_folders
    from brainuad.preprocess.pipeline import load_case
    from brainuad.train.checkpoints import load_model

    model, _ = load_model(run)
    if model.config.kind == "intensity":
        return {"kind": "baseline", "n": len(find_case_folders(cal_dirs))}
    if model.config.kind == "restore":
        cases = [load_case(f) for f in find_case_folders(cal_dirs)]
        x = torch.from_numpy(np.stack([c.image.array for c in cases]))[:, None]
        brain = torch.from_numpy(np.stack([c.brain_mask.array for c in cases]))[:, None]
        return {"kind": "restoration", "n": len(cases), **model.self_check(x, brain)}
    mean = np.mean([load_case(f).image.array for f in find_case_folders(train_dirs)], axis=0)
    if model.config.kind == "segment":  # its own check: a held-out task, against |x − the mean training image|
        cases = [load_case(f) for f in find_case_folders(cal_dirs)]
        x = torch.from_numpy(np.stack([c.image.array for c in cases]))[:, None]
        brain = torch.from_numpy(np.stack([c.brain_mask.array for c in cases]))[:, None]
        check = model.self_check(x, brain, mean=torch.from_numpy(mean)[None, None])
        return {"kind": "segmentation", "n": len(cases), **check}
    model_mse, mean_mse = [], []
    for folder in find_case_folders(cal_dirs):
        case = load_case(folder)
        brain = case.brain_mask.array
        with torch.no_grad():
            recon = model(torch.from_numpy(case.image.array)[None, None])[0, 0].numpy()
        model_mse.append(float(((recon - case.image.array)[brain] ** 2).mean()))
        mean_mse.append(float(((mean - case.image.array)[brain] ** 2).mean()))
    return {"model": float(np.mean(model_mse)), "mean_image": float(np.mean(mean_mse)), "n": len(model_mse),
            "model_better_on": int(np.sum(np.array(model_mse) < np.array(mean_mse)))}  # fmt: skip


def _summary_numbers(summary: dict) -> dict:
    slices = summary["slices"]
    numbers = {
        "cases": summary["cases"],
        "slice_auroc": slices["auroc"],
        "slice_auroc_ci95": slices["auroc_ci95"],
        "slice_ap": slices["ap_abnormal_class"],
        "slice_ap_ci95": slices["ap_abnormal_class_ci95"],
        "threshold": summary["threshold"]["value"],
        "threshold_source": summary["threshold"]["source"],
    }
    if "voxels" in summary:
        numbers["dice_mean"] = summary["voxels"]["dice_mean"]
        numbers["dice_mean_ci95"] = summary["voxels"]["dice_mean_ci95"]
        numbers["voxel_ap_pooled"] = summary["voxels"]["ap_pooled"]
    return numbers


def evaluate_model(name: str, out: Path, cal_dirs: list[Path]) -> dict:
    from brainuad.config import Config, ModelConfig, PreprocessConfig
    from brainuad.evaluate.calibrate import calibrate
    from brainuad.evaluate.evaluation import evaluate
    from brainuad.train.loop import train

    calibrate(out / "run", cal_dirs)
    baseline = out / "intensity"
    if not (baseline / "model.safetensors").is_file():
        config = Config(preprocessing=PreprocessConfig(preset="paper-2mm"), model=ModelConfig(kind="intensity"))
        train(cal_dirs, baseline, config, progress=False)
    calibrate(baseline, cal_dirs)
    brats = sorted(p for p in (DATA / "brats2018").iterdir() if p.is_dir())
    others = [DATA / "stroke", DATA / "ms"] if name == "t2" else [DATA / "ms"]
    results = {}
    for model_name, model_dir in (("model", out / "run"), ("intensity", baseline)):
        cache = out / "cache"
        calibrated = evaluate(model_dir, [*brats, *others], out / "eval" / model_name / "calibrated", modality=name,
                              cache_dir=cache, progress=False)  # fmt: skip
        protocol = evaluate(model_dir, [*brats[2:], *others], out / "eval" / model_name / "results_protocol",
                            tune_sources=brats[:2], modality=name, cache_dir=cache, progress=False)  # fmt: skip
        results[model_name] = {"calibrated_threshold": _summary_numbers(calibrated),
                               "results_protocol": _summary_numbers(protocol)}  # fmt: skip
    return results


def reference_detection(name: str, out: Path, model: str | Path | None = None) -> dict:
    """``detect`` on the card's reference scan with ``model`` (default: the run's fp32 weights)."""
    from brainuad.infer.detect import detect_batch
    from brainuad.io.volumes import read_json

    scan = DATA / REFERENCE_SCAN[name]
    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    result = detect_batch([scan], model or out / "run", out / "detect", device="cpu", force=True, progress=False)
    if not result.done:
        raise SystemExit(f"detect failed on {scan}: {result.failed}")
    summary = read_json(result.done[0] / "summary.json")
    return {"scan": REFERENCE_SCAN[name], "scan_score": summary["scan_score"],
            "lesion_count": summary.get("lesion_count"), "wall_seconds": round(time.perf_counter() - wall0, 1),
            "cpu_seconds": round(_cpu_seconds() - cpu0, 1)}  # fmt: skip


def install(name: str, out: Path, metrics: dict) -> Path:
    """Write fp16 weights, config, calibration (case names only) and metrics into src/brainuad/builtin/<name>/."""
    from safetensors.torch import load_file, save_file

    from brainuad.io.volumes import read_json, write_json

    target = BUILTIN / name
    target.mkdir(parents=True, exist_ok=True)
    state = load_file(str(out / "run" / "model.safetensors"))
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    save_file(half, str(target / "model.safetensors"), metadata={"brainuad_builtin": name})
    shutil.copyfile(out / "run" / "config.json", target / "config.json")
    calibration = read_json(out / "run" / "calibration.json")
    calibration["healthy_cases"] = [Path(p).name for p in calibration["healthy_cases"]]
    if calibration.get("residual_spread"):  # calibrate --normalise-residual: the file the calibration names
        shutil.copyfile(out / "run" / calibration["residual_spread"], target / calibration["residual_spread"])
    write_json(target / "calibration.json", calibration)
    # The card's reference number is what users (and the tests) get: the installed fp16 weights, not the run's fp32.
    # By folder: a model being installed for the first time has no card yet, so builtin:NAME does not list it.
    metrics = {**metrics, "reference": reference_detection(name, out, target)}
    write_json(target / "metrics.json", metrics)
    (target / "MODEL_CARD.md").write_text(write_card(name, metrics), encoding="utf-8")
    for path in target.iterdir():
        path.chmod(0o644)  # package data: readable by every user of an installation
    return target


def add_contrast_reference(name: str, out: Path) -> float:
    """Give an installed model's ``calibration.json`` the contrast reference it lacks, computed as ``calibrate``
    computes it: its healthy calibration scans preprocessed with the model's settings, the median of their
    CSF / white-matter ratios (:func:`brainuad.evaluate.calibrate.contrast_reference`).

    ``builtin:t1`` was calibrated on cases preprocessed before the ratio was recorded, so a T2 scan given to it passed
    without a contrast check. Weights, threshold and slice references stay as they are.

    Returns:
        The reference written (or the one already there).
    """
    from brainuad.evaluate.calibrate import contrast_reference
    from brainuad.io.volumes import find_nifti_files, read_json, strip_nifti_suffix, write_json
    from brainuad.preprocess.pipeline import preprocess_batch
    from brainuad.train.checkpoints import load_config

    path = BUILTIN / name / "calibration.json"
    calibration = read_json(path)
    if calibration.get("csf_to_white_matter") is not None:
        return calibration["csf_to_white_matter"]
    wanted = set(calibration["healthy_cases"])
    # The shipped calibration scans that are real files in ../shared/data (t2's are simulated: they have a reference).
    folders = [DATA / f for f in (*T1_FOLDERS, *T1_EXTRA)]
    scans = [p for p in find_nifti_files(folders) if strip_nifti_suffix(p) in wanted]
    missing = wanted - {strip_nifti_suffix(p) for p in scans}
    if missing:
        raise SystemExit(f"calibration scans of builtin:{name} not found in {DATA}: {sorted(missing)}")
    config = load_config(BUILTIN / name / "config.json")
    result = preprocess_batch(scans, out / "contrast_prep", config.preprocessing, progress=False)
    if result.failed:
        raise SystemExit(f"preprocessing failed: {result.failed}")
    records = [read_json(folder / "record.json") for folder in [*result.done, *result.skipped]]
    calibration["csf_to_white_matter"] = contrast_reference([r["qc"]["csf_to_white_matter"] for r in records])
    write_json(path, calibration)
    path.chmod(0o644)  # package data: readable by every user of an installation
    return calibration["csf_to_white_matter"]


CARD_INTRO = {
    "t2": (
        "T2-weighted brain MRI: {method} on the paper-2mm grid",
        "- **Training data**: {n_train} healthy T2 volumes — {n_sim} T2 scans simulated with `brainuad.data.mrsim` "
        "from 16 of BrainWeb's 20 normal anatomies ({train_anatomies}; one scan each, `brainuad.data.mrsim` "
        "v{sim_version}: random "
        "1.5/3 T TSE parameters, pose, a native adult head size (the anatomies are MNI-sized), in-plane 1–2 mm, "
        "slices up to 5 mm, bias field, Rician noise; skull-stripped with the simulation's exact "
        "brain mask, whereas `detect` strips real heads with deepbet), IXI002's T2 (one real person, IXI, CC BY-SA "
        "3.0), the FSL MNI152 T2 templates at 1 mm and 2 mm (HCP pipelines / FSL licence) and SPM's avg152T2 "
        "(GPL). BrainWeb: research use; cite Aubert-Broche, Evans & Collins, NeuroImage 32:138 (2006) and Kwan, "
        "Evans & Pike, IEEE TMI 18:1085 (1999). IXI: https://brain-development.org/ixi-dataset/ (CC BY-SA 3.0).\n"
        "- **Calibration** (threshold at a healthy voxel false-positive rate of 1e-3, raised until the median flagged "
        "volume of the calibration scans is <= 1 mL; slice and scan references): {n_cal} T2 scans simulated from the "
        "4 anatomies never trained on ({cal_anatomies}).",
    ),
    "t1": (
        "T1-weighted brain MRI: {method} on the paper-2mm grid",
        "- **Training data**: {n_train} real healthy IXI T1 individuals from ../shared/data (IXI data only, CC BY-SA "
        "3.0, https://brain-development.org/ixi-dataset/; IXI's London sites, adults) — split: {split}; the exact "
        "training and calibration case names are in this folder's metrics.json.\n"
        "- **Calibration** (threshold at a healthy voxel false-positive rate of 1e-3, slice and scan references): "
        "the {n_cal} held-out IXI T1 individuals, never trained on.",
    ),
    "flair": (
        "FLAIR brain MRI: {method} on the paper-2mm grid",
        "- **Training data** (what the method is fitted on): {n_train} healthy FLAIR volumes, all simulated with "
        "`brainuad.data.mrsim` "
        "v{sim_version} from 16 of BrainWeb's 20 normal anatomies ({train_anatomies}; one scan each: random 1.5/3 T "
        "FLAIR parameters with a CSF-nulling inversion time, pose, a native adult head size, in-plane 1–2 mm, slices "
        "up to 5 mm, bias field, Rician noise; skull-stripped with the simulation's exact brain mask). No real FLAIR "
        "was trained on: the one real healthy FLAIR in ../shared/data is kept to check the simulation and to count "
        "healthy false positives. BrainWeb: research use; cite Aubert-Broche, Evans & Collins, NeuroImage 32:138 "
        "(2006) and Kwan, Evans & Pike, IEEE TMI 18:1085 (1999).\n"
        "- **Calibration** (healthy voxel false-positive rate 1e-3, raised until the median flagged volume of the "
        "calibration scans is <= 1 mL; slice and scan references): {n_cal} FLAIR scans simulated from the 4 "
        "anatomies never trained on ({cal_anatomies}).",
    ),
}
LIMITS = {
    "t2": [
        "Trained mostly on simulated T2 (one real person and three population templates besides): real scans carry "
        "texture, vessels and artefacts the simulator lacks, so healthy real tissue may look anomalous; the "
        "calibration was made on simulated scans and may not transfer to real ones.",
        "Never saw FLAIR, T1, PD, contrast-enhanced scans, children, or scanners outside the simulated 1.5/3 T range.",
        "2 mm grid (paper-2mm, axial MNI z −26…+69 mm): the cerebellum and vertex are outside; findings smaller than "
        "the smallest component (Recipe) are dropped by post-processing, and MS plaques are lost to the 5 mm median "
        "filter at 2 mm (docs/results.md).",
    ],
    "t1": [
        "IXI adults only (two London sites, 1.5/3 T): other scanners, children and pathology-free elderly beyond IXI's "
        "range were never seen.",
        "Never saw T2, FLAIR, PD or contrast-enhanced T1; gliomas are often T1-iso/hypointense, so T1 is a weak "
        "contrast for this task whatever the model.",
        "2 mm grid (paper-2mm, axial MNI z −26…+69 mm): the cerebellum and vertex are outside.",
    ],
    "flair": [
        "Trained on simulated FLAIR only: real FLAIR carries texture, vessels, flow and fat-suppression artefacts "
        "and hyperintense rims the simulator lacks, so healthy real tissue may be flagged; its calibration was "
        "made on simulated scans too (the console and the report say the healthy reference is simulated).",
        "Never saw T1, T2, PD, contrast-enhanced scans or children.",
        "2 mm grid (paper-2mm, axial MNI z −26…+69 mm): the cerebellum and vertex are outside; MS plaques of a few "
        "mm are mostly lost to the grid, the median filter and the smallest component (docs/results.md).",
    ],
}


def _ci(values: list | None) -> str:
    return f"[{values[0]:.2f}, {values[1]:.2f}]" if values else "n/a"


def _recipe_text(name: str, training: dict) -> str:
    """The card's recipe paragraph, from the recorded configuration."""
    rm, rt = training["recipe"]["model"], training["recipe"]["training"]
    common = (
        f"Adam lr {rt['lr']} with {rt['warmup_steps']} warm-up steps and cosine decay, batch {training['batch_size']}, "
        f"{training['epochs']} epochs × {rt['steps_per_epoch']} steps = {training['steps']} steps, augmentation "
        f"{rt['augment']}, seed 0, no validation split (the last weights). Trained on {training.get('device', 'cpu')} "
        f"in {training['wall_seconds'] / 60:.1f} min wall, {training['cpu_seconds'] / 60:.1f} min CPU"
        + (f" ({training['cpu_seconds_note']})" if training.get("cpu_seconds_note") else "")
        + (f", {training['threads']} threads, on a 2-core x86 machine shared with other jobs"
           if training.get("device", "cpu") == "cpu" else "")
        + ". Weights stored as float16 (cast to float32 on load)."
    )  # fmt: skip
    if rm["kind"] == "intensity":
        return (
            f"`benchmarks/builtin_models.py {name}`: brainuad's `intensity` baseline — no training; the anomaly map "
            "is the preprocessed scan's intensity, post-processed as for every model (median filter, eroded brain "
            "mask, smallest component), and the threshold is fitted on healthy scans. It is shipped because it "
            "measured best on the two tuning cases among the FLAIR methods evaluated ("
            + ", ".join(f"{method} {dice:.3f}" for method, dice in (training.get("tuning_dice") or {}).items())
            + " best pooled Dice; docs/results.md): a learned FLAIR model that beats thresholding is not there yet."
        )
    if rm["kind"] == "segment":
        options = rm.get("options") or {}
        tasks = [t for t in options.get("tasks", ()) if t != options.get("holdout_task")]
        randomised = options.get("contrast_randomise")
        return (
            f"`benchmarks/builtin_models.py {name}` (recipe `{training['recipe']['name']}` of "
            f"benchmarks/lesions.py): a GroupNorm 3D U-Net ({rm['channels']} channels, stem {rm['stem_channels']}) "
            "predicts, per voxel, how strongly a synthetic anomaly changed it (`brainuad.models.anomalies`: tasks "
            + ", ".join(f"`{t}`" for t in tasks)
            + f"; `{options.get('holdout_task')}` held out). "
            + ("Each training scan is first given a random contrast (contrast randomisation: its three tissue "
               "classes, a Gaussian mixture, get random intensities, blur, bias field and noise). " if randomised
               else "")
            + f"Random {'×'.join(str(v) for v in options.get('patch_size', ()))} patches, batch "
            f"{training['batch_size']}, BCE (positive weight 10) + soft Dice inside the brain, AdamW lr {rt['lr']} "
            f"after {rt['warmup_steps']} warm-up steps, constant; {training['steps']} steps until its "
            f"{options.get('time_budget_minutes', 0):g}-minute budget. {round(100 * rt['val_fraction'])} % of the "
            "training scans are held out for validation: the held-out task's AP on them every "
            f"{options.get('val_every_steps')} steps picks the weights (no lesion is ever seen). Whole-volume "
            "inference; anomaly map: the predicted score (0…1). Trained on "
            f"{training.get('device', 'cpu')} in {training['wall_seconds'] / 60:.1f} min wall, "
            f"{training['cpu_seconds'] / 60:.1f} min CPU, {training.get('threads', 1)} thread(s) on a 2-core x86 "
            "machine shared with other jobs. Weights stored as float16 (cast to float32 on load)."
            + _shipped_because(training)
        )  # fmt: skip
    if rm["kind"] == "restore":
        options = rm.get("options") or {}
        post = training["recipe"].get("postprocessing")
        return (
            f"`benchmarks/builtin_models.py {name}` (recipe `{training['recipe']['name']}` of "
            f"benchmarks/lesions.py): a 3D U-Net ({rm['channels']} channels, stem {rm['stem_channels']}) predicts a "
            "correction added to its input. Each training volume (augmented first when augmentation is on) gets 1–"
            f"{options.get('max_anomalies', 3)} synthetic anomalies with probability "
            f"{options.get('anomaly_fraction', 0.8)} (`brainuad.models.anomalies`: smooth blobs and deformed "
            "ellipsoids from a few voxels to ~8 % of the brain, intensity shifts and scalings, patches of another "
            "place, smooth noise textures, brighter and darker), and the network learns to restore the clean volume "
            "(MSE inside the brain). Anomaly map: |x − restored x|, "
            f"{options.get('restore_steps', 1)} restoration pass(es)"
            + (f", smallest component kept {post['min_component_mm3']:g} mm³" if post else "")
            + " (each chosen on the two tuning cases: docs/results.md). "
            + common
            + _shipped_because(training)
        )
    return (
        f"`benchmarks/builtin_models.py {name}`: brainuad's quick recipe (`brainuad train --recipe quick`): "
        f"network {rm['channels']} channels (stem {rm['stem_channels']}) on the volume pooled ×{rm['input_pool']}, "
        f"dense latent {rm['latent']}, output = the training cohort's mean image + a learned deviation "
        f"(mean skip); MSE inside the brain, " + common
    )


def _shipped_because(training: dict) -> str:
    """Why this method is the shipped one: the tuning cases' best pooled Dice of each method measured on the track."""
    dice = training.get("tuning_dice") or {}
    if not dice:
        return ""
    shown = ", ".join(f"{method} {value:.3f}" for method, value in dice.items())
    return f" Shipped because it measured best on the two tuning cases (best pooled Dice: {shown})."


def _check_text(check: dict) -> str:
    """The card's held-out check: reconstruction against the mean image, or restoration of planted anomalies."""
    if check.get("kind") == "baseline":
        return (
            "No network, so no reconstruction check: the anomaly map is the preprocessed image itself (scaled to "
            "0…1 by its own 0.5–99.5 percentiles), the baseline every learned method must beat."
        )
    if check.get("kind") == "segmentation":
        ap, base = check["heldout_ap"], check["heldout_ap_mean_image"]
        return (
            f"Held-out healthy scans (the {check['n']} calibration scans, never trained on) with an anomaly of the "
            f"task held out of training (`{check['heldout_task']}`) planted, a fixed seed, several draws per scan: "
            f"the model's score finds the planted voxels at AP {ap:.3f} against {base:.3f} for the distance from the "
            "mean training image. "
            + ("The model segments anomalies it never trained on." if ap > base else
               "The model does **not** beat the mean image on them: its anomaly maps are not to be trusted.")
        )  # fmt: skip
    if check.get("kind") == "restoration":
        before, after = check["planted_mse_unrestored"], check["planted_mse_restored"]
        return (
            f"Held-out healthy scans (the {check['n']} calibration scans) with synthetic anomalies planted (fixed "
            f"seed): squared error inside the anomalies {after:.4f} after restoration against {before:.4f} left as "
            f"they are ({after / before:.2f} of it). "
            + (f"The model restores planted anomalies: it removes {100 * (1 - after / before):.0f} % of their error."
               if after < 0.9 * before else
               f"The model barely restores planted anomalies: it removes only {100 * (1 - after / before):.0f} % of "
               "their error." if after < before else
               "The model does **not** restore planted anomalies: its anomaly maps are not to be trusted.")
        )  # fmt: skip
    return (
        f"Held-out healthy scans (the {check['n']} calibration scans): mean squared reconstruction error in the brain "
        f"{check['model']:.4f} vs {check['mean_image']:.4f} for the mean training image (model better on "
        f"{check['model_better_on']} of {check['n']}). "
        + ("The model does **not** beat the mean image: "
           "its reconstructions are further from a healthy scan than the average brain is, so its anomaly maps carry "
           "reconstruction error everywhere, not only at lesions."
           if check["model"] >= check["mean_image"]
           else f"The model beats the mean image ({check['model'] / check['mean_image']:.2f} of its error).")
    )  # fmt: skip


#: How a card's title names each method (the flair card's title takes the shipped one's).
METHOD_TITLE = {
    "intensity": "brainuad's intensity baseline (the scaled scan is the anomaly map; threshold fitted on healthy "
    "scans)",
    "restore": "3D U-Net that restores synthetic anomalies (brainuad's `restore`, DISYRE family)",
    "ae": "3D residual autoencoder (brainuad's quick recipe: dense latent, mean-image skip)",
    "segment": "3D U-Net segmenting synthetic anomalies (brainuad's `segment`, self-supervised anomaly segmentation)",
}


def write_card(name: str, metrics: dict) -> str:
    """The model card, rendered from the run's metrics (numbers are never typed by hand)."""
    title, data_text = CARD_INTRO[name]
    kind = metrics["training"]["recipe"]["model"]["kind"]
    title = title.replace("{method}", METHOD_TITLE.get(kind, kind))
    data = metrics["data"]
    fields = {
        "n_train": len(data["train"]),
        "n_cal": len(data["calibration"]),
        "n_sim": sum(n.startswith("sim-") for n in data["train"]),
        "train_anatomies": ", ".join(a.split("_")[0] for a in data.get("train_anatomies", [])),
        "sim_version": data.get("simulation_version", 1),  # runs before the version was recorded: version 1
        "cal_anatomies": ", ".join(a.split("_")[0] for a in data.get("calibration_anatomies", [])),
        "split": data.get("split", ""),
    }
    training, mse, ref = metrics["training"], metrics["held_out_mse"], metrics["reference"]
    lines = [
        f"# builtin:{name}",
        "",
        f"{title}. Research use only, not a medical device.",
        "",
        "## Training data",
        "",
        data_text.format(**fields),
        "",
        "## Preprocessing",
        "",
        "`brainuad preprocess --preset paper-2mm`: deepbet skull stripping (skipped for skull-stripped input), rigid "
        "registration to the MNI ICBM152 2009a symmetric template (T1 contrast), 80×96×48 crop at 2 mm, 0.5–99.5 "
        "percentile scaling. `detect` applies the same to every input scan.",
        "",
        "## Recipe",
        "",
        _recipe_text(name, training),
        "",
        "## Numbers",
        "",
        _check_text(mse),
        "",
        "Shared labelled cases (../shared/data; slice-level metrics count brain-containing axial slices, AP is for "
        "the abnormal class, pooled over cases; Dice per case then averaged; 95 % bootstrap intervals over cases — "
        "with 5–8 cases they are wide, read them as such):",
        "",
        "| model | threshold | cases | slice AUROC | slice AP | Dice |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for model in ("model", "intensity"):
        for protocol, label in (("calibrated_threshold", "shipped calibration"),
                                ("results_protocol", "tuned on 2 BraTS (docs/results.md)")):  # fmt: skip
            m = metrics["evaluation"][model][protocol]
            shown = f"builtin:{name}" if model == "model" else "intensity baseline"
            lines.append(
                f"| {shown} | {label} | {m['cases']} | {m['slice_auroc']:.3f} {_ci(m.get('slice_auroc_ci95'))} | "
                f"{m['slice_ap']:.3f} {_ci(m.get('slice_ap_ci95'))} | "
                f"{m.get('dice_mean', float('nan')):.3f} {_ci(m.get('dice_mean_ci95'))} |"
            )
    ours, base = (metrics["evaluation"][m]["results_protocol"] for m in ("model", "intensity"))
    cal = metrics["evaluation"]["model"]["calibrated_threshold"]
    (a0, a1), (b0, b1) = ours["slice_auroc_ci95"], base["slice_auroc_ci95"]
    overlap = a0 <= b1 and b0 <= a1
    verdict = [
        f"{label} {ours[key]:.3f} vs {base[key]:.3f} ({'higher' if ours[key] > base[key] else 'not higher'})"
        for key, label in (("slice_auroc", "slice AUROC"), ("slice_ap", "slice AP"), ("dice_mean", "Dice"))
    ]
    if training["recipe"]["model"]["kind"] == "intensity":
        against = (f"builtin:{name} is the intensity baseline itself (fitted on {name.upper()} scans; the second "
                   "pair of rows is the same method fitted on the calibration scans, as for every card). ")  # fmt: skip
    else:
        against = (
            "Against the intensity baseline (the scaled image itself as the anomaly map), docs/results.md protocol: "
            + "; ".join(verdict)
            + f". {ours['cases']} reported cases: "
            + (
                "the slice AUROC intervals overlap, so no difference is established either way. "
                if overlap
                else "the slice AUROC intervals do not overlap. "
            )
        )
    lines += [
        "",
        against
        + f"The shipped calibration (healthy FPR 1e-3) sets the threshold at {cal['threshold']:.3g}, "
        f"{cal['threshold'] / ours['threshold']:.2f} × the {ours['threshold']:.3g} that the tuning cases prefer; at "
        f"it the mean Dice is {cal.get('dice_mean', float('nan')):.3f} (threshold alone, without the extent level of "
        f"calibration.json), against {ours.get('dice_mean', float('nan')):.3f} at the tuned threshold.",
    ]
    lines += [
        "",
        f"Reference detection (recomputed by the tests): `brainuad detect ../shared/data/{ref['scan']} --model "
        f"builtin:{name}` gives scan score {ref['scan_score']:.5f} ({ref['wall_seconds']:.0f} s wall, "
        f"{ref['cpu_seconds']:.0f} s CPU, shared machine).",
        "",
        "## Known limits",
        "",
        *[f"- {limit}" for limit in LIMITS[name]],
        "",
        f"Reproduce: `python benchmarks/builtin_models.py {name}` (compares with `metrics.json`).",
        "",
    ]
    return "\n".join(lines)


README_START, README_END = "<!-- builtin-facts: begin -->", "<!-- builtin-facts: end -->"


def installed_metrics() -> dict[str, dict]:
    """Each shipped model's ``metrics.json`` (the numbers its card is rendered from), by name."""
    paths = {name: BUILTIN / name / "metrics.json" for name in sorted(RECIPE)}
    return {name: json.loads(path.read_text()) for name, path in paths.items() if path.is_file()}


def readme_facts() -> str:
    """The README's shipped-model facts, one bullet per model, rendered from the installed ``metrics.json`` (the
    numbers of each model card) between markers: the README cannot contradict the cards (tests check it is current).
    """
    lines = [README_START]
    for name, metrics in installed_metrics().items():
        training, mse = metrics["training"], metrics["held_out_mse"]
        ours, base = (metrics["evaluation"][m]["results_protocol"] for m in ("model", "intensity"))
        (a0, a1), (b0, b1) = ours["slice_auroc_ci95"], base["slice_auroc_ci95"]
        if mse.get("kind") == "baseline":
            check = (f"the `{training['recipe']['name']}` baseline, no network (best on the tuning cases among the "
                     f"{name.upper()} methods measured)")  # fmt: skip
        elif mse.get("kind") == "segmentation":
            ap, mean_ap = mse["heldout_ap"], mse["heldout_ap_mean_image"]
            check = (f"`segment` (self-supervised anomaly segmentation); on its {mse['n']} held-out healthy "
                     f"calibration scans it finds a held-out synthetic task at AP {ap:.3f} against {mean_ap:.3f} for "
                     "the mean training image" + ("" if ap > mean_ap else " — it does **not** beat it"))  # fmt: skip
        elif mse.get("kind") == "restoration":
            kept = mse["planted_mse_restored"] / mse["planted_mse_unrestored"]
            check = (f"`restore` (synthetic-anomaly restoration); on its {mse['n']} held-out healthy calibration "
                     f"scans with anomalies planted it leaves {kept:.2f} of their error"
                     + ("" if kept < 1 else " — it does **not** restore them"))  # fmt: skip
        else:
            ratio = mse["model"] / mse["mean_image"]
            check = (f"on its {mse['n']} held-out healthy calibration scans it "
                     + (f"**beats the mean training image** ({ratio:.2f} of its error, better on "
                        f"{mse['model_better_on']} of {mse['n']})" if ratio < 1 else
                        f"does **not** beat the mean training image ({ratio:.2f} of its error)"))  # fmt: skip
        fitted = (f"fitted on {len(metrics['data']['train'])} healthy volumes" if mse.get("kind") == "baseline" else
                  f"trained on {len(metrics['data']['train'])} healthy volumes in "
                  f"{training['wall_seconds'] / 60:.0f} min on {training.get('device', 'cpu')}")  # fmt: skip
        lines.append(
            f"- `builtin:{name}`: {fitted}; {check}"
            + f"; on {ours['cases']} shared cases (docs/results.md protocol) slice AUROC {ours['slice_auroc']:.3f} vs "
            f"{base['slice_auroc']:.3f} and Dice {ours['dice_mean']:.3f} vs {base['dice_mean']:.3f} for the intensity "
            "baseline — "
            + ("intervals overlapping: no difference established." if a0 <= b1 and b0 <= a1
               else "AUROC intervals apart.")
        )  # fmt: skip
    lines.append(README_END)
    return "\n".join(lines)


def update_readme() -> Path:
    """Rewrite the README's shipped-model facts (between the markers) from every installed ``metrics.json``."""
    path = ROOT / "README.md"
    text = path.read_text()
    start, end = text.index(README_START), text.index(README_END) + len(README_END)
    path.write_text(text[:start] + readme_facts() + text[end:])
    return path


RESULTS_START, RESULTS_END = "<!-- builtin-models: begin -->", "<!-- builtin-models: end -->"  # results.py keeps it


def update_results_md() -> Path:
    """Rewrite the shipped models' section of docs/results.md from every installed ``metrics.json``."""
    lines = [
        RESULTS_START,
        "## Shipped models (`--model builtin:t1`, `builtin:t2`, `builtin:flair`)",
        "",
        "Written by `benchmarks/builtin_models.py --install` from each shipped model's `metrics.json` (not by "
        "results.py). Same reported cases and tuning cases as above for T2 (T1 and FLAIR: the 4 BraTS cases + MS "
        "patient07); *shipped* calibration uses the model's own threshold (healthy voxel FPR 1e-3 on held-out "
        "healthy scans, raised to a 1 mL median flagged volume where the card says so) on all shared cases, none of "
        "which it has seen. Brackets: 95 % bootstrap over cases (5–8 cases: wide). Training data, recipe and "
        "limits: `brainuad models t1|t2|flair`.",
        "",
        "| model | threshold | cases | slice AUROC | slice AP (abnormal) | Dice (mean) | voxel AP |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in sorted(RECIPE):
        path = BUILTIN / name / "metrics.json"
        if not path.is_file():
            continue
        metrics = json.loads(path.read_text())
        for model in ("model", "intensity"):
            for protocol, label in (("results_protocol", "tuned on 2 BraTS"), ("calibrated_threshold", "shipped")):
                m = metrics["evaluation"][model][protocol]
                shown = f"builtin:{name}" if model == "model" else f"intensity ({name.upper()})"
                lines.append(
                    f"| {shown} | {label} | {m['cases']} | {m['slice_auroc']:.3f} {_ci(m['slice_auroc_ci95'])} | "
                    f"{m['slice_ap']:.3f} {_ci(m['slice_ap_ci95'])} | {m.get('dice_mean', float('nan')):.3f} "
                    f"{_ci(m.get('dice_mean_ci95'))} | {m.get('voxel_ap_pooled', float('nan')):.3f} |"
                )
    lines.append(RESULTS_END)
    path = ROOT / "docs" / "results.md"
    text = path.read_text()
    if RESULTS_START in text:
        text = text[: text.index(RESULTS_START)] + text[text.index(RESULTS_END) + len(RESULTS_END) :].lstrip("\n")
    path.write_text(text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n")
    return path


def compare(name: str, metrics: dict) -> None:
    shipped = BUILTIN / name / "metrics.json"
    if not shipped.is_file():
        print(f"no shipped metrics for {name} to compare with")
        return
    card = json.loads(shipped.read_text())
    for model in ("model", "intensity"):
        for protocol in ("calibrated_threshold", "results_protocol"):
            for key in ("slice_auroc", "slice_ap", "dice_mean"):
                new = metrics["evaluation"][model][protocol].get(key)
                old = card["evaluation"][model][protocol].get(key)
                print(f"{model:9s} {protocol:20s} {key:11s} card {old} rerun {new}")
    print(f"reference scan score: card {card['reference']['scan_score']} rerun {metrics['reference']['scan_score']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", choices=sorted(RECIPE))
    parser.add_argument(
        "--contrast-reference",
        action="store_true",
        help="give the installed model's calibration.json the contrast reference it lacks, from its calibration "
        "scans (weights and threshold unchanged)",
    )
    parser.add_argument(
        "--docs-only",
        action="store_true",
        help="only rewrite the README's shipped-model facts from the installed metrics.json (no training)",
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--epochs", type=int, default=None, help="default: the quick recipe's")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="training device (default: cpu)")
    parser.add_argument("--prep", type=Path, default=None, help="t1: reuse these preprocessed paper-2mm cases")
    parser.add_argument("--split", type=Path, default=ROOT / "benchmarks" / "splits" / "t1_2mm.json", help="t1 split")
    parser.add_argument("--install", action="store_true", help="write the result into src/brainuad/builtin/NAME")
    parser.add_argument("--install-only", action="store_true", help="install the finished run in --out, no rerun")
    args = parser.parse_args()
    if args.contrast_reference:
        if args.name is None:
            parser.error("--contrast-reference needs the model's name")
        out = args.out or ROOT / "benchmarks" / "out" / f"builtin_{args.name}"
        print(f"builtin:{args.name} contrast reference (CSF/WM): {add_contrast_reference(args.name, out):.4f}")
        return
    if args.docs_only:
        print(f"updated -> {update_readme()}")
        return
    if args.name is None:
        parser.error("name (t1 or t2) is required unless --docs-only")
    out = args.out or ROOT / "benchmarks" / "out" / f"builtin_{args.name}"
    if args.install_only:
        print(f"installed -> {install(args.name, out, json.loads((out / 'metrics.json').read_text()))}")
        print(f"updated -> {update_results_md()}")
        print(f"updated -> {update_readme()}")
        return
    epochs = args.epochs
    t0 = time.perf_counter()
    if args.name in ("t2", "flair"):
        train_dirs, cal_dirs, data = prepare_simulated(args.name, out)
    else:
        train_dirs, cal_dirs, data = prepare_t1(out, args.prep, args.split)
    print(f"data ready in {time.perf_counter() - t0:.0f} s: {len(data['train'])} train, "
          f"{len(data['calibration'])} calibration", flush=True)  # fmt: skip
    training = train_model(args.name, out, train_dirs, epochs, args.device)
    print(f"trained: {training}", flush=True)
    metrics = {"data": data, "training": training, "held_out_mse": _held_out_mse(out / "run", train_dirs, cal_dirs)}
    metrics["evaluation"] = evaluate_model(args.name, out, cal_dirs)
    metrics["reference"] = reference_detection(args.name, out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    compare(args.name, metrics)
    if args.install:
        print(f"installed -> {install(args.name, out, metrics)}")
        print(f"updated -> {update_results_md()}")
        print(f"updated -> {update_readme()}")
    print(json.dumps({k: v for k, v in metrics.items() if k != "data"}, indent=1))


if __name__ == "__main__":
    main()
