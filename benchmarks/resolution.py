"""Full resolution where lesions are small (issue #34): the intensity baseline at 1 mm (preset ``paper``) against 2 mm
(``paper-2mm``), on MS patient07's plaques (FLAIR and T2), with the median filter chosen per resolution on the tuning
cases, and the detect time per raw scan at each resolution.

Usage (from the repository root; needs ``python benchmarks/lesions.py prepare flair`` and ``… prepare t2`` first, for
their simulated healthy calibration scans):
    python benchmarks/resolution.py [flair t2]     # writes benchmarks/out/resolution/, prints the tables

Per modality and resolution:
1. **Model**: ``intensity`` (no network: the scaled scan is the map), fitted and calibrated (healthy voxel FPR 1e-3,
   raised until the median flagged volume is <= 1 mL) on the 4 simulated healthy calibration scans of
   ``lesions.py prepare`` (``raw/cal``: never trained on by any learned model of that track), preprocessed at that
   resolution. Nothing is fitted from data, so fitting and calibrating on the same scans leaks nothing.
2. **Post-processing chosen on the tuning cases**: the median filter (``median_mm`` 5, 3 or 0 = off; erosion 2 mm,
   smallest component 20 mm³, all in millimetres) with the best pooled Dice on Brats18_2013_3_1 and
   Brats18_CBICA_ABM_1 at the calibrated threshold (the default operating point). Ties: the larger filter.
3. **Reported**: MS patient07 at the calibrated threshold with the chosen filter — plaques found by size class and
   false-positive components — and, for what each stage loses, every filter setting beside it (not chosen on it).
   Healthy: flagged volume on the real healthy scan of the contrast (``healthy_other``).
4. **Cost**: ``detect`` on patient07's raw scan (wall and CPU seconds, torch on 2 threads).
"""

from __future__ import annotations

import csv
import json
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "out" / "resolution"
LESIONS = ROOT / "benchmarks" / "out" / "lesions"
PRESETS = {"2mm": "paper-2mm", "1mm": "paper"}
MEDIANS = (5.0, 3.0, 0.0)
HEALTHY = {"flair": DATA / "healthy_other" / "synthsr-FLAIR_head.nii.gz",
           "t2": DATA / "healthy_other" / "niivue-T2w_head.nii.gz"}  # fmt: skip
SIZE_BINS = ("<20 mm³", "20–100 mm³", "100–1000 mm³", ">=1 mL")


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _bin(volume_ml: float) -> str:
    mm3 = volume_ml * 1000
    return SIZE_BINS[0] if mm3 < 20 else SIZE_BINS[1] if mm3 < 100 else SIZE_BINS[2] if mm3 < 1000 else SIZE_BINS[3]


def _model(modality: str, res: str) -> Path:
    """The intensity model at this resolution, fitted on the healthy calibration scans (preprocessed here)."""
    from brainuad.config import Config, ModelConfig, PreprocessConfig
    from brainuad.preprocess.pipeline import preprocess_batch
    from brainuad.train.loop import train

    prep = OUT / modality / res / "prep"
    scans = sorted((LESIONS / modality / "raw" / "cal").glob("*.nii.gz"))
    if not scans:
        raise SystemExit(f"no healthy calibration scans: run python benchmarks/lesions.py prepare {modality}")
    config = PreprocessConfig(preset=PRESETS[res])
    result = preprocess_batch(scans, prep, config, progress=False)
    if result.failed:
        raise SystemExit(f"preprocessing failed: {result.failed}")
    run = OUT / modality / res / "runs" / "intensity"
    if not (run / "summary.json").is_file():
        shutil.rmtree(run, ignore_errors=True)
        train([prep], run, Config(preprocessing=config, model=ModelConfig(kind="intensity")), progress=False)
    return run


def _variant(run: Path, median_mm: float) -> Path:
    """A copy of ``run`` with ``postprocessing.median_mm`` set, calibrated on the healthy calibration scans."""
    from brainuad.evaluate.calibrate import calibrate
    from brainuad.io.volumes import read_json, write_json

    variant = run.parent / f"intensity-median{median_mm:g}"
    if not (variant / "calibration.json").is_file():
        shutil.rmtree(variant, ignore_errors=True)
        shutil.copytree(run, variant, ignore=shutil.ignore_patterns("cache", "*.lock", "calibration.json"))
        config = read_json(variant / "config.json")
        config["postprocessing"]["median_mm"] = median_mm
        write_json(variant / "config.json", config)
        calibrate(variant, [run.parent.parent / "prep"], device="cpu", allow_training_scans=True)
    return variant


def _lesions(folder: Path) -> dict:
    """Patient07's plaques found per size class, and false-positive components, from an evaluation folder."""
    found = {b: [0, 0] for b in SIZE_BINS}
    with open(folder / "per_lesion.csv") as handle:
        for row in csv.DictReader(handle):
            if row["kind"] == "reference":
                b = _bin(float(row["volume_ml"]))
                found[b][1] += 1
                found[b][0] += row["matched"] == "True"
    with open(folder / "per_case.csv") as handle:
        case = next(csv.DictReader(handle))
    return {"found_by_size": found, "false_positives": int(case["false_positive_components"]),
            "dice": float(case["dice"]), "predicted_ml": float(case["predicted_ml"])}  # fmt: skip


def _detect_time(run: Path, modality: str) -> dict:
    from brainuad.data.datasets import find_labelled_cases
    from brainuad.infer.detect import detect_batch

    scan = find_labelled_cases(DATA / "ms", modality)[0].image_path
    folder = OUT / modality / "detect" / run.parent.parent.name
    shutil.rmtree(folder, ignore_errors=True)
    wall, cpu = time.perf_counter(), _cpu()
    result = detect_batch([scan], run, folder, device="cpu", progress=False)
    if not result.done:
        raise SystemExit(f"detect failed: {result.failed}")
    return {"wall_seconds": round(time.perf_counter() - wall, 1), "cpu_seconds": round(_cpu() - cpu, 1)}


def run_modality(modality: str) -> dict:
    import torch

    from brainuad.evaluate.evaluation import evaluate

    torch.set_num_threads(2)
    brats = sorted(p for p in (DATA / "brats2018").iterdir() if p.is_dir())
    tune = brats[:2]
    results: dict = {}
    for res in PRESETS:
        base = _model(modality, res)
        cache = OUT / "cache" / modality / res
        rows = {}
        for median in MEDIANS:
            run = _variant(base, median)
            name = run.name
            judged = OUT / modality / res / "tune" / name
            if not (judged / "summary.json").is_file():
                evaluate(run, tune, judged, modality=modality, cache_dir=cache, device="cpu", progress=False)
            tuning = json.loads((judged / "summary.json").read_text())["voxels"]["dice_pooled"]
            reported = OUT / modality / res / "eval" / name
            if not (reported / "summary.json").is_file():
                evaluate(run, [DATA / "ms"], reported, modality=modality, cache_dir=cache, device="cpu",
                         progress=False, healthy_sources=[HEALTHY[modality]])  # fmt: skip
            summary = json.loads((reported / "summary.json").read_text())
            healthy = summary.get("healthy", {}) or {}
            rows[median] = {"tuning_dice_pooled": tuning, "threshold": summary["threshold"]["value"],
                            "healthy_flagged_ml": healthy.get("false_positive_ml_median"),
                            "healthy_components": healthy.get("false_positive_components_per_scan"),
                            **_lesions(reported)}  # fmt: skip
            print(modality, res, f"median {median:g} mm", json.dumps(rows[median]), flush=True)
        chosen = max(MEDIANS, key=lambda m: (rows[m]["tuning_dice_pooled"], m))
        results[res] = {"chosen_median_mm": chosen, "settings": {f"{m:g}": r for m, r in rows.items()},
                        "detect": _detect_time(_variant(base, chosen), modality)}  # fmt: skip
        print(modality, res, "chosen median", chosen, "detect", results[res]["detect"], flush=True)
    return results


def main(argv: list[str]) -> int:
    modalities = argv or ["flair", "t2"]
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "results.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}
    for modality in modalities:
        merged[modality] = run_modality(modality)
        path.write_text(json.dumps(merged, indent=1))
    for modality in modalities:
        for res, r in merged[modality].items():
            chosen = r["settings"][f"{r['chosen_median_mm']:g}"]
            found = ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in chosen["found_by_size"].items())
            print(f"{modality} {res}: median {r['chosen_median_mm']:g} mm (tuning Dice "
                  f"{chosen['tuning_dice_pooled']:.3f}); plaques {found}; FP {chosen['false_positives']}; "
                  f"detect {r['detect']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
