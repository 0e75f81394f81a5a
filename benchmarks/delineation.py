"""Delineation at the default operating point (issue #34): each shipped model at its healthy-calibrated threshold, with
and without the hysteresis extent level chosen on the tuning cases, against the same model at its tuned best-Dice
threshold; the predicted/reference volume per case, the share of the flagged volume in CSF, false positives per scan
and the flagged volume on real healthy scans.

Usage (from the repository root):
    python benchmarks/delineation.py [t2 flair t1]     # writes benchmarks/out/delineation/, prints the table

Protocol (docs/results.md): the extent level and the tuned threshold are chosen on Brats18_2013_3_1 and
Brats18_CBICA_ABM_1 only (the extent level among those keeping the model's own healthy calibration scans, the
``prep/cal`` scans of ``lesions.py prepare TRACK``, within 2 mL median: the issue's healthy criterion); reported on
the other four BraTS cases, the stroke case (T2) and MS patient07 (every modality it has). Healthy: the real healthy
scans of that contrast in healthy_other/ (T2, FLAIR) and the 12 held-out IXI T1 individuals of
benchmarks/splits/t1_2mm.json (T1; preprocessed by ``lesions.py prepare t1``).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "out" / "delineation"
HEALTHY = {
    "t2": [DATA / "healthy_other" / "niivue-T2w_head.nii.gz"],
    "flair": [DATA / "healthy_other" / "synthsr-FLAIR_head.nii.gz"],
}


def _cases(modality: str) -> tuple[list[Path], list[Path]]:
    brats = sorted(p for p in (DATA / "brats2018").iterdir() if p.is_dir())
    others = ([DATA / "stroke"] if modality == "t2" else []) + [DATA / "ms"]
    return brats[:2], brats[2:] + others


def _healthy(modality: str) -> list[Path]:
    if modality != "t1":
        return HEALTHY[modality]
    split = json.loads((ROOT / "benchmarks" / "splits" / "t1_2mm.json").read_text())
    prepared = ROOT / "benchmarks" / "out" / "lesions" / "t1" / "all"
    return sorted(p for p in prepared.iterdir() if p.name.split("-")[0] in split["test"])


def _rows(folder: Path) -> list[dict]:
    with open(folder / "per_case.csv") as handle:
        return list(csv.DictReader(handle))


def _measure(folder: Path) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    rows = _rows(folder)
    fp = [float(r["false_positive_components"]) for r in rows if r["false_positive_components"] != ""]
    ratios = {r["case"]: float(r["volume_ratio"]) for r in rows if r.get("volume_ratio") not in ("", "nan", None)}
    flagged = sum(float(r["predicted_ml"]) for r in rows)
    in_csf = sum(float(r["predicted_ml"]) * float(r["predicted_csf_share"]) for r in rows
                 if r["predicted_csf_share"] not in ("", "nan"))  # fmt: skip
    healthy = (summary.get("healthy") or {}).get("false_positive_ml", [])
    return {
        "threshold": summary["threshold"],
        "dice_mean": summary["voxels"]["dice_mean"],
        "dice_mean_ci95": summary["voxels"]["dice_mean_ci95"],
        "fp_per_scan": float(np.mean(fp)) if fp else math.nan,
        "lesions_found": sum(int(r["reference_lesions_detected"] or 0) for r in rows),
        "lesions": sum(int(r["reference_lesions"] or 0) for r in rows),
        "volume_ratio": ratios,
        "csf_share": in_csf / flagged if flagged else math.nan,
        "healthy_flagged_ml": healthy,
    }


def run_model(name: str, out: Path) -> dict:
    from brainuad.evaluate.calibrate import calibrate_extent
    from brainuad.evaluate.evaluation import evaluate
    from brainuad.io.shipped import resolve_model_dir

    modality = name
    tune, report = _cases(modality)
    cache = out / "cache" / modality
    plain = out / "runs" / f"{name}-core"
    grown = out / "runs" / f"{name}-extent"
    for run in (plain, grown):
        if not run.is_dir():
            shutil.copytree(resolve_model_dir(f"builtin:{name}"), run)
    results = {}
    start = time.perf_counter()
    if not (grown / "calibration.json").read_text().count("extent_threshold"):
        # Checked on the model's own healthy calibration scans (never on the reported healthy scans).
        calibration_scans = ROOT / "benchmarks" / "out" / "lesions" / modality / "prep" / "cal"
        healthy = sorted(p for p in calibration_scans.iterdir() if (p / "image.nii.gz").is_file())
        calibrate_extent(grown, tune, modality, cache_dir=cache / "tune", device="cpu", progress=False,
                         healthy=healthy, max_healthy_ml=2.0)  # fmt: skip
    results["extent_chosen_s"] = round(time.perf_counter() - start, 1)
    for label, run, tune_sources in (("core", plain, None), ("hysteresis", grown, None), ("tuned", plain, tune)):
        folder = out / "eval" / f"{name}-{label}"
        if not (folder / "summary.json").is_file():
            evaluate(run, report, folder, tune_sources=tune_sources, modality=modality, cache_dir=cache,
                     healthy_sources=_healthy(modality), device="cpu", progress=False)  # fmt: skip
        results[label] = _measure(folder)
        print(name, label, json.dumps({k: v for k, v in results[label].items() if k != "volume_ratio"}), flush=True)
    results["extent"] = json.loads((grown / "calibration.json").read_text())
    results["extent"] = {k: v for k, v in results["extent"].items() if k.startswith("extent") or k == "threshold"}
    return results


def main(argv: list[str]) -> int:
    names = argv or ["t2", "flair", "t1"]
    OUT.mkdir(parents=True, exist_ok=True)
    results = {name: run_model(name, OUT) for name in names}
    path = OUT / "results.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged.update(results)
    path.write_text(json.dumps(merged, indent=1))
    for name, r in results.items():
        ratio = r["hysteresis"]["dice_mean"] / r["tuned"]["dice_mean"] if r["tuned"]["dice_mean"] else math.nan
        print(f"{name}: hysteresis Dice {r['hysteresis']['dice_mean']:.3f} = {ratio:.2f} × tuned "
              f"{r['tuned']['dice_mean']:.3f}; core {r['core']['dice_mean']:.3f}; FP/scan "
              f"{r['hysteresis']['fp_per_scan']:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
