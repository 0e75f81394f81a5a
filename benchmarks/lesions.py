"""The lesion benchmark of issue #26: restore, the quick-recipe ae, dae, normative and intensity on the T2, FLAIR
and T1 tracks, judged on real lesions by voxel AP, Dice and FROC (lesion sensitivity vs false positives per scan).

Usage (from the repository root; each step reuses what an earlier step wrote under --out):
    python benchmarks/lesions.py prepare t2            # simulate + preprocess the healthy training/calibration scans
    python benchmarks/lesions.py train t2 restore       # train one method (CPU seconds recorded in the run folder)
    python benchmarks/lesions.py steps t2               # restore: 1 vs 2 vs 3 passes, judged on the tuning cases
    python benchmarks/lesions.py normalise t2 restore   # residual ÷ healthy spread or not, judged on the tuning cases
    python benchmarks/lesions.py components t2 restore  # smallest component kept (20/100/300 mm³), on the tuning cases
    python benchmarks/lesions.py evaluate t2 restore    # calibrate on the held-out simulated scans, then evaluate

Data per track:
- t2: 16 BrainWeb anatomies simulated as T2 (brainuad.data.mrsim, one scan each) + IXI002's T2 + three T2 templates
  (as builtin:t2); calibration: 4 other anatomies, never trained on.
- flair: the same 16/4 anatomies simulated as FLAIR; no real healthy FLAIR is trained on (the one in
  healthy_other/ is kept for checking the simulation and the healthy false positives).
- t1: the real healthy IXI T1 individuals of benchmarks/splits/t1_2mm.json (train → training, validation →
  calibration), as builtin:t1; reported on the BraTS cases' and MS patient07's T1.
Protocol (docs/results.md): thresholds and settings tuned on Brats18_2013_3_1 and Brats18_CBICA_ABM_1 (the first
two BraTS cases by name); reported on the other four BraTS cases, the stroke case (T2 only) and MS patient07.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "out" / "lesions"
T2_REAL = [
    "healthy/IXI002-Guys-0828-T2_brain.nii.gz",
    "templates/MNI152_T2_1mm_brain.nii.gz",
    "templates/MNI152_T2_2mm.nii.gz",
    "templates/avg152T2.nii.gz",
]
#: The network and training of each method on these tracks (2 CPU threads).
RECIPES = {
    "restore": {"model": {"kind": "restore", "stem_channels": 8, "channels": (16, 32, 64, 128)},
                "training": {"epochs": 8, "steps_per_epoch": 25, "batch_size": 2, "lr": 1e-3,
                             "lr_schedule": "cosine", "warmup_steps": 20, "augment": "off"}},
    # restore with brainuad's augmentation (spatial, bias field, gamma, noise) applied to the clean target before the
    # anomalies are planted: the network learns to leave scanner-like variation alone and restore only anomalies.
    # Sized to complete its cosine schedule in ~45 min on 2 threads (an unfinished schedule restored worse: T2 long).
    "restore-aug": {"model": {"kind": "restore", "stem_channels": 8, "channels": (16, 32, 64, 128)},
                    "training": {"epochs": 12, "steps_per_epoch": 50, "batch_size": 2, "lr": 1e-3,
                                 "lr_schedule": "cosine", "warmup_steps": 20, "augment": "on"}},
    "dae": {"model": {"kind": "dae", "stem_channels": 8, "channels": (16, 32, 64, 128)},
            "training": {"epochs": 12, "steps_per_epoch": 50, "batch_size": 2, "lr": 1e-3,
                         "lr_schedule": "cosine", "warmup_steps": 20, "augment": "off", "loss_mask": True}},
    # Self-supervised anomaly segmentation (issue #33): 48³ patches of batch 4, four synthetic tasks with the
    # gradient-domain blend held out (its AP on 20 % of the training scans picks the weights), stopped by a 55-min
    # budget at a constant learning rate (a cosine schedule would need the step count the budget allows in advance).
    "segment": {"model": {"kind": "segment", "stem_channels": 8, "channels": (16, 32, 64),
                          "options": {"patch_size": (48, 48, 48), "val_every_steps": 40,
                                      "time_budget_minutes": 55.0}},
                "training": {"epochs": 1, "steps_per_epoch": 100_000, "batch_size": 4, "lr": 1e-3,
                             "lr_schedule": "constant", "warmup_steps": 20, "augment": "on", "val_fraction": 0.2}},
    # The same, trained on randomised contrasts of each scan's tissue classes (one model for every contrast).
    "segment-cr": {"model": {"kind": "segment", "stem_channels": 8, "channels": (16, 32, 64),
                             "options": {"patch_size": (48, 48, 48), "val_every_steps": 40,
                                         "time_budget_minutes": 55.0, "contrast_randomise": True}},
                   "training": {"epochs": 1, "steps_per_epoch": 100_000, "batch_size": 4, "lr": 1e-3,
                                "lr_schedule": "constant", "warmup_steps": 20, "augment": "off",
                                "val_fraction": 0.2}},
    "normative": {"model": {"kind": "normative"}, "training": {}},
    "intensity": {"model": {"kind": "intensity"}, "training": {}},
}  # fmt: skip


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def brats_split() -> tuple[list[Path], list[Path]]:
    cases = sorted(p for p in (DATA / "brats2018").iterdir() if p.is_dir())
    return cases[:2], cases[2:]


def prepare(track: str, out: Path) -> None:
    """Simulate the healthy scans of ``track`` from BrainWeb and preprocess them (paper-2mm)."""
    from brainuad.config import PreprocessConfig
    from brainuad.data import mrsim
    from brainuad.io.volumes import save_volume
    from brainuad.preprocess.pipeline import preprocess_batch

    if track == "t1":
        return _prepare_real_t1(out)
    anatomies = mrsim.find_anatomies(DATA / "brainweb")
    groups = {"train": anatomies[:16], "cal": anatomies[16:]}
    raw: dict[str, list[Path]] = {"train": [], "cal": []}
    for split, group in groups.items():
        for a, path in enumerate(group):
            seed = 1000 * (a + (0 if split == "train" else 100))
            target = out / track / "raw" / split / f"sim-{path.name.split('_')[0]}-0.nii.gz"
            if not target.exists():
                rng = np.random.default_rng(seed)
                spacing = float(rng.uniform(1.0, 2.0))  # clinical in-plane sizes, thick slices
                thickness = float(rng.choice([spacing, 3.0, 4.0, 5.0]))
                subject = mrsim.simulate(mrsim.load_anatomy(path), seed, track, spacing, thickness, skull=False)
                save_volume(subject.image, target)
            raw[split].append(target)
    extra = [DATA / rel for rel in T2_REAL] if track == "t2" else []
    for split, inputs in (("train", raw["train"] + extra), ("cal", raw["cal"])):
        result = preprocess_batch(inputs, out / track / "prep" / split, PreprocessConfig(preset="paper-2mm"),
                                  progress=False)  # fmt: skip
        if result.failed:
            raise SystemExit(f"preprocessing failed: {result.failed}")


def _prepare_real_t1(out: Path) -> None:
    """T1: the 52 real healthy IXI individuals (no simulation), preprocessed with paper-2mm into ``out/t1/all`` and
    linked by benchmarks/splits/t1_2mm.json — train → ``prep/train``, validation → ``prep/cal`` (its test
    individuals stay out: benchmarks/t1_healthy.py reports on them)."""
    from builtin_models import T1_EXTRA, T1_FOLDERS

    from brainuad.config import PreprocessConfig
    from brainuad.io.volumes import find_nifti_files
    from brainuad.preprocess.pipeline import preprocess_batch

    split = json.loads((ROOT / "benchmarks" / "splits" / "t1_2mm.json").read_text())
    files = find_nifti_files([DATA / f for f in T1_FOLDERS] + [DATA / f for f in T1_EXTRA])
    result = preprocess_batch(files, out / "t1" / "all", PreprocessConfig(preset="paper-2mm"), progress=False)
    if result.failed:
        raise SystemExit(f"preprocessing failed: {result.failed}")
    for part, folder in (("train", "train"), ("val", "cal")):
        target = out / "t1" / "prep" / folder
        target.mkdir(parents=True, exist_ok=True)
        for case in sorted((out / "t1" / "all").iterdir()):
            link = target / case.name
            if case.name.split("-")[0] in split[part] and (case / "record.json").is_file() and not link.exists():
                link.symlink_to(case.resolve(), target_is_directory=True)


def train_method(
    track: str, method: str, out: Path, epochs: int | None, minutes: float | None = None, tag: str = "",
    threads: int = 2,
) -> Path:
    import torch

    from brainuad.config import Config, ModelConfig, PreprocessConfig, TrainConfig, quick_recipe, replace
    from brainuad.io.volumes import read_json, write_json
    from brainuad.train.loop import train

    torch.set_num_threads(threads)
    if method == "ae":  # the quick recipe, as builtin:t1/t2
        config = quick_recipe()
        training = replace(config.training, val_fraction=0.0, val_every=100_000, seed=0, device="cpu")
        config = replace(config, training=training)
    else:
        recipe = RECIPES[method]
        training = TrainConfig(**{"val_fraction": 0.0, "val_every": 100_000, "seed": 0, "device": "cpu",
                                  **recipe["training"]})  # fmt: skip
        config = Config(model=ModelConfig(**recipe["model"]), training=training)
    if epochs:
        config = replace(config, training=replace(config.training, epochs=epochs))
    config = replace(config, preprocessing=PreprocessConfig(preset="paper-2mm"))
    run = out / track / "runs" / f"{method}{tag}"
    if not (run / "summary.json").is_file():
        cpu0, wall0 = _cpu_seconds(), time.perf_counter()
        deadline = time.monotonic() + 60 * minutes if minutes else None  # stops (and validates) at the budget
        train([out / track / "prep" / "train"], run, config, resume=(run / "state.json").is_file(), progress=False,
              deadline=deadline)  # fmt: skip
        cost = {"cpu_seconds": round(_cpu_seconds() - cpu0, 1), "wall_seconds": round(time.perf_counter() - wall0, 1)}
        write_json(run / "cost.json", {**cost, "threads": threads})
    print(json.dumps(read_json(run / "summary.json").get("reconstruction_check"), indent=1))
    return run


def _normalise_choice(track: str, method: str, out: Path, tag: str) -> bool:
    """Whether the ``normalise`` step chose the residual normalisation for this run (False when it never ran)."""
    path = out / track / "normalise" / f"{method}{tag}.json"
    return bool(json.loads(path.read_text())["normalise_residual"]) if path.is_file() else False


def transfer(source_track: str, track: str, method: str, out: Path, tag: str = "") -> Path:
    """A copy of ``source_track``'s run (same weights, no calibration) under ``track``'s runs, to be calibrated on
    ``track``'s healthy scans: one contrast-randomised model, a calibration per contrast."""
    import shutil

    source = out / source_track / "runs" / f"{method}{tag}"
    target = out / track / "runs" / f"{method}{tag}-from-{source_track}"
    if not target.is_dir():
        skip = shutil.ignore_patterns("cache", "tensorboard", "calibration.json", "residual_spread*", "*.lock")
        shutil.copytree(source, target, ignore=skip)
    return target


def evaluate_method(track: str, method: str, out: Path, tag: str = "") -> dict:
    from brainuad.evaluate.calibrate import calibrate
    from brainuad.evaluate.evaluation import evaluate

    run = out / track / "runs" / f"{method}{tag}"
    # Every method, the quick-recipe ae included, from its own run folder (`train TRACK ae`): the ae row of
    # docs/results.md was evaluated as builtin:t2 when that was the quick-recipe ae on these scans.
    normalise = _normalise_choice(track, method, out, tag)
    calibrate(run, [out / track / "prep" / "cal"], device="cpu", normalise_residual=normalise)
    tune, report = brats_split()
    others = ([DATA / "stroke"] if track == "t2" else []) + [DATA / "ms"]
    folder = out / track / "eval" / f"{method}{tag}"
    summary = evaluate(run, [*report, *others], folder, tune_sources=tune, modality=track,
                       cache_dir=out / "cache" / track, device="cpu", progress=False)  # fmt: skip
    print(json.dumps({k: summary["voxels"][k] for k in ("ap_pooled", "dice_mean", "dice_mean_ci95")}))
    return summary


def _variant(track: str, method: str, out: Path, label: str, edit) -> Path:
    """A copy of a trained run with ``edit(config_dict)`` applied to its config.json (weights unchanged)."""
    import shutil

    from brainuad.io.volumes import read_json, write_json

    variant = out / track / "runs" / f"{method}-{label}"
    if not variant.is_dir():
        skip = shutil.ignore_patterns("cache", "tensorboard", "last*", "calibration.json", "*.lock")
        shutil.copytree(out / track / "runs" / method, variant, ignore=skip)
        config = read_json(variant / "config.json")
        edit(config)
        write_json(variant / "config.json", config)
    return variant


def _judge_on_tuning(track: str, run: Path, out: Path, folder: Path, normalise: bool = False) -> dict:
    """Calibrate ``run`` on the healthy calibration scans (``normalise``: with ``--normalise-residual``), evaluate it
    on the tuning cases only; the numbers a setting is chosen by."""
    from brainuad.evaluate import froc
    from brainuad.evaluate.calibrate import calibrate
    from brainuad.evaluate.evaluation import evaluate

    calibrate(run, [out / track / "prep" / "cal"], device="cpu", normalise_residual=normalise)
    tune, _ = brats_split()
    summary = evaluate(run, tune, folder, modality=track, cache_dir=out / "cache" / track, device="cpu",
                       progress=False)  # fmt: skip
    curve = summary["froc"]["reported"]  # the tuning cases are this evaluation's reported cases
    chosen = froc.operating_point(curve)
    point = froc.at(curve, chosen) if chosen is not None else {"sensitivity": 0.0, "false_positives_per_scan": 0.0}
    return {
        "ap_pooled_tuning": summary["voxels"]["ap_pooled"],
        "dice_tuning": summary["voxels"]["dice_mean"],
        "sensitivity_fp3_tuning": point["sensitivity"],
        "fp_per_scan_fp3_tuning": point["false_positives_per_scan"],
    }


def compare_steps(track: str, out: Path, steps: tuple[int, ...] = (1, 2, 3)) -> dict:
    """One restoration pass against iterative ones, judged on the tuning cases only (voxel AP, threshold-free): the
    winner is what the reported evaluation uses. Each variant is a copy of the run with ``restore_steps`` changed."""
    from brainuad.io.volumes import read_json, write_json

    run = out / track / "runs" / "restore"
    results = {}
    for k in steps:
        variant = _variant(
            track, "restore", out, f"steps{k}", lambda c, k=k: c["model"]["options"].update(restore_steps=k)
        )
        results[k] = _judge_on_tuning(track, variant, out, out / track / "steps" / f"steps{k}")
        print(k, results[k])
    best = max(results, key=lambda k: results[k]["ap_pooled_tuning"])
    tune, _ = brats_split()
    write_json(out / track / "steps.json", {"results": results, "best": best, "judged_on": [p.name for p in tune]})
    if best != 1:  # the reported run uses the winner
        config = read_json(run / "config.json")
        config["model"]["options"]["restore_steps"] = best
        write_json(run / "config.json", config)
    return results


def compare_components(track: str, method: str, out: Path, sizes: tuple[float, ...] = (20.0, 100.0, 300.0)) -> dict:
    """The smallest component kept (``postprocessing.min_component_mm3``), judged on the tuning cases only: the most
    lesions found at the <= 3 false positives per scan point, then the fewest false positives, then the best Dice.
    The winner is written into the run's config, which the reported evaluation then uses."""
    from brainuad.io.volumes import read_json, write_json

    results = {}
    for size in sizes:

        def edit(config: dict, size: float = size) -> None:
            config.setdefault("postprocessing", {})["min_component_mm3"] = size

        variant = _variant(track, method, out, f"min{size:g}", edit)
        results[size] = _judge_on_tuning(track, variant, out, out / track / "components" / f"{method}-min{size:g}")
        print(size, results[size], flush=True)
    best = max(results, key=lambda k: (results[k]["sensitivity_fp3_tuning"], -results[k]["fp_per_scan_fp3_tuning"],
                                       results[k]["dice_tuning"]))  # fmt: skip
    tune, _ = brats_split()
    write_json(out / track / "components" / f"{method}.json",
               {"results": {f"{k:g}": v for k, v in results.items()}, "best_min_component_mm3": best,
                "judged_on": [p.name for p in tune]})  # fmt: skip
    run = out / track / "runs" / method
    config = read_json(run / "config.json")
    config.setdefault("postprocessing", {})["min_component_mm3"] = best
    write_json(run / "config.json", config)
    return results


def compare_normalisation(track: str, method: str, out: Path, tag: str = "") -> dict:
    """The residual as it is against the residual divided by its healthy voxel-wise spread (``calibrate
    --normalise-residual``), judged on the tuning cases only (pooled voxel AP, threshold-free); the winner is what
    the ``evaluate`` step calibrates with."""
    from brainuad.io.volumes import write_json

    run = out / track / "runs" / f"{method}{tag}"
    tune, _ = brats_split()
    results = {}
    for normalise in (False, True):
        folder = out / track / "normalise" / f"{method}{tag}-{'normalised' if normalise else 'plain'}"
        results[str(normalise)] = _judge_on_tuning(track, run, out, folder, normalise)
        print(normalise, results[str(normalise)], flush=True)
    chosen = results["True"]["ap_pooled_tuning"] > results["False"]["ap_pooled_tuning"]
    write_json(out / track / "normalise" / f"{method}{tag}.json",
               {"results": results, "normalise_residual": chosen, "judged_on": [p.name for p in tune]})  # fmt: skip
    return results


def _fmt(value, ci=None) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and all(np.isfinite(ci)) else "")


def report(out: Path) -> str:
    """The docs/results.md section of this benchmark, from the evaluation summaries under ``out``."""
    import csv

    from brainuad.io.volumes import read_json

    lines = [
        "## Lesion detection with few false alarms (restore, FROC; issue #26)",
        "",
        "Command: `python benchmarks/lesions.py prepare TRACK`, `... train TRACK METHOD`, `... evaluate TRACK METHOD`,"
        " `... report` (docs in the script). Thresholds tuned on Brats18_2013_3_1 and Brats18_CBICA_ABM_1 only; "
        "reported on the other four BraTS cases, the stroke case (T2) and MS patient07. Voxel AP: brain ∪ lesion "
        "voxels pooled over the reported cases (AP of the lesion class); Dice: mean over cases at the threshold of "
        "best pooled Dice on the tuning cases, 95 % bootstrap interval over cases. Lesions: hit rule of "
        "`brainuad.evaluate.metrics.HIT_RULE` (overlap >= 10 % of the component). FP/scan: false-positive "
        "components per reported scan. 'FP<=3 point': the most sensitive threshold with <= 3 false positives per "
        "scan on the tuning cases, applied to the reported cases.",
        "",
    ]
    for track in ("t2", "flair", "t1"):
        rows = []
        for folder in sorted((out / track / "eval").glob("*/summary.json")):
            summary, method = read_json(folder), folder.parent.name
            v, f = summary["voxels"], summary.get("froc") or {}
            at_op = (f.get("operating_points") or {}).get("operating_threshold", {})
            budget = (f.get("operating_points") or {}).get("fp_budget_3", {})
            large = "sensitivity_lesions_ge_1ml"
            rep = budget.get("reported", {})
            rows.append(
                f"| {method} | {_fmt(v['ap_pooled'])} | {_fmt(v['dice_mean'], v['dice_mean_ci95'])} | "
                f"{_fmt(at_op.get('sensitivity'))} / {_fmt(at_op.get(large))} | "
                f"{_fmt(at_op.get('false_positives_per_scan'))} | "
                f"{_fmt(rep.get('sensitivity'))} / {_fmt(rep.get(large))} | "
                f"{_fmt(rep.get('false_positives_per_scan'))} |"
            )
        if not rows:
            continue
        lines += [
            f"### {track.upper()} ({summary['cases']} reported cases: {', '.join(summary['reported_cases'])})",
            "",
            "| method | voxel AP | Dice mean | lesion sensitivity all / >= 1 mL (best-Dice thr.) | FP/scan | "
            "sensitivity all / >= 1 mL (FP<=3 point) | FP/scan (FP<=3 point) |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
        for folder in sorted((out / track / "eval").glob("*/per_lesion.csv")):
            with open(folder) as handle:
                ms = [r for r in csv.DictReader(handle) if r["case"] == "patient07" and r["kind"] == "reference"]
            if ms:
                by_bin: dict[str, list[bool]] = {}
                for r in ms:
                    by_bin.setdefault(r["size_bin"], []).append(r["matched"] == "True")
                found = "; ".join(f"{b}: {sum(v)}/{len(v)}" for b, v in sorted(by_bin.items()))
                method = folder.parent.name
                name = folder.parent.name
                lines.append(f"- {name}: MS patient07 plaques found by size (best-Dice threshold): {found}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("prepare", "train", "transfer", "steps", "normalise", "components",
                                         "evaluate", "report"))  # fmt: skip
    parser.add_argument("track", nargs="?", default="t2", choices=("t2", "flair", "t1"))
    parser.add_argument("method", nargs="?", default="restore", choices=("restore", "ae", *RECIPES))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--minutes", type=float, default=None, help="train: a time budget (resumes stop there too)")
    parser.add_argument("--tag", default="", help="suffix of the run and evaluation folder names (a second run)")
    parser.add_argument("--threads", type=int, default=2, help="train: torch threads (2 = the whole CI machine)")
    parser.add_argument("--source", default="t1", help="transfer: the track whose run is copied to TRACK")
    args = parser.parse_args(argv)
    if args.step == "prepare":
        prepare(args.track, args.out)
    elif args.step == "train":
        train_method(args.track, args.method, args.out, args.epochs, args.minutes, args.tag, args.threads)
    elif args.step == "transfer":  # then: evaluate TRACK METHOD --tag -from-SOURCE
        print(transfer(args.source, args.track, args.method, args.out, args.tag))
    elif args.step == "steps":
        compare_steps(args.track, args.out)
    elif args.step == "components":
        compare_components(args.track, args.method, args.out)
    elif args.step == "normalise":
        compare_normalisation(args.track, args.method, args.out, args.tag)
    elif args.step == "evaluate":
        evaluate_method(args.track, args.method, args.out, args.tag)
    else:
        section = report(args.out)
        (args.out / "results_section.md").write_text(section)
        print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
