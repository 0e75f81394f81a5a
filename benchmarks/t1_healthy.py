"""Healthy false positives at the healthy-calibrated threshold (issue #26, T1): what ``detect`` flags in held-out
healthy T1 brains, and the lesions it still finds there, within one IXI site mix and across sites.

Usage (from the repository root):
    python benchmarks/t1_healthy.py [--out benchmarks/out/t1_healthy] [--model builtin:t1]

Protocol:
- Healthy data: the 18 validation and test individuals of the 52 real healthy T1 individuals in ../shared/data,
  preprocessed with ``paper-2mm``.
- Within-site split (benchmarks/splits/t1_2mm.json, the split builtin:t1 was trained on): the model is calibrated
  (``brainuad calibrate``'s defaults: healthy voxel rate 1e-3, raised until the median flagged volume on the
  calibration scans is <= 1 mL) on the 6 validation individuals, then judged on the 12 held-out test individuals
  (flagged mL per healthy brain) and on the T1 of the reported lesion cases (the four BraTS cases after the two
  tuning ones, and MS patient07) at that same threshold: no lesion case chooses anything.
- By IXI site: builtin:t1 was trained on 34 individuals of which 32 come from Hammersmith (HH) and 2 from Guy's; the
  12 held-out test individuals are 9 HH and 3 Guy's. The same calibrated threshold is judged on each site's test
  individuals apart: flagged mL per healthy brain and scan-level triage (the patients against that site's healthy
  individuals). A model trained on HH alone (train on one site, test on the other, the clean form of this split)
  costs another ~35 CPU-minutes of training and is not run here.
Writes OUT/t1_healthy.json and prints the docs/results.md rows.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from builtin_models import DATA, T1_EXTRA, T1_FOLDERS  # noqa: E402  (the 52 individuals' files)
from lesions import brats_split  # noqa: E402  (the lesion protocol's tuning / reported cases)

SPLIT = ROOT / "benchmarks" / "splits" / "t1_2mm.json"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def prepare(out: Path, subjects: set[str]) -> dict[str, Path]:
    """Preprocess (or reuse) the scans of ``subjects`` (IXI ids); returns each case folder by its name."""
    from brainuad.config import PreprocessConfig
    from brainuad.io.volumes import find_nifti_files
    from brainuad.preprocess.pipeline import preprocess_batch

    files = find_nifti_files([DATA / f for f in T1_FOLDERS] + [DATA / f for f in T1_EXTRA])
    chosen = [f for f in files if f.name.split("-")[0] in subjects]
    result = preprocess_batch(chosen, out / "prep", PreprocessConfig(preset="paper-2mm"), progress=False)
    if result.failed:
        raise SystemExit(f"preprocessing failed: {result.failed}")
    return {p.name: p for p in (out / "prep").iterdir() if (p / "record.json").is_file()}


def _site(case: Path) -> str:
    return case.name.split("-")[1]


def judge(
    run_dir: Path, calibration: list[Path], healthy: list[Path], out: Path, name: str, calibrate_first: bool = True
) -> dict:
    """Calibrate ``run_dir`` on healthy scans (or reuse its calibration), then evaluate the reported lesion cases and
    held-out healthy scans at that threshold; returns the numbers of the docs/results.md row."""
    from brainuad.evaluate.calibrate import calibrate
    from brainuad.evaluate.evaluation import evaluate
    from brainuad.infer.calibration import read_calibration

    cal = calibrate(run_dir, calibration, device="cpu") if calibrate_first else read_calibration(run_dir)
    _, report = brats_split()
    summary = evaluate(run_dir, [*report, DATA / "ms"], out / "eval" / name, modality="t1", cache_dir=out / "cache",
                       device="cpu", progress=False, healthy_sources=healthy)  # fmt: skip
    lesions, h = summary["lesions"], summary["healthy"]
    large = [b for label, b in lesions["by_size"].items() if label != "<1 mL"]
    return {
        "threshold": cal.threshold,
        "calibration_scans": [p.name for p in calibration],
        "calibration_flagged_ml": list(cal.healthy_flagged_ml or ()),
        "healthy_scans": [p.name for p in healthy],
        "healthy_flagged_ml_median": h["false_positive_ml_median"],
        "healthy_flagged_ml_mean": h["false_positive_ml_mean"],
        "healthy": h,
        "lesion_sensitivity": lesions["sensitivity"],
        "lesions_ge_1ml": [sum(b["detected"] for b in large), sum(b["lesions"] for b in large)],
        "lesions": lesions,
        "false_positives_per_patient_scan": lesions["false_positives_per_scan"],
        "dice_mean": summary["voxels"]["dice_mean"],
        "scan_auroc": summary["scans"]["auroc"],
        "scan_auroc_ci95": summary["scans"]["auroc_ci95"],
    }


def site_split(out: Path, split: dict) -> dict:
    """Train the quick recipe (as builtin:t1) on the Hammersmith individuals of the training split alone, calibrate it
    on the Hammersmith validation individuals, and judge it on the Hammersmith test individuals (within site) and on
    every Guy's individual (a site it never saw)."""
    from builtin_models import train_model

    cases = prepare(out, set(split["train"]) | set(split["val"]) | set(split["test"]))
    subject = {c: c.name.split("-")[0] for c in cases.values()}
    hh = {p: sorted((c for c in cases.values() if _site(c) == "HH" and subject[c] in split[p]), key=str)
          for p in ("train", "val", "test")}  # fmt: skip
    guys = sorted((c for c in cases.values() if _site(c) == "Guys"), key=str)
    folder = out / "site_hh"
    if not (folder / "run" / "summary.json").is_file():
        training = train_model("t1", folder, hh["train"], None)
        (folder / "training.json").write_text(json.dumps(training, indent=1))
    run = folder / "run"
    return {
        "training": json.loads((folder / "training.json").read_text()),
        "trained_on": [c.name for c in hh["train"]],
        "HH test individuals (within site)": judge(run, hh["val"], hh["test"], out, "site_hh_within"),
        "all Guy's individuals (unseen site)": judge(run, hh["val"], guys, out, "site_hh_guys", calibrate_first=False),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "t1_healthy")
    parser.add_argument("--model", default="builtin:t1", help="the T1 model judged (trained on the split's train part)")
    parser.add_argument(
        "--site-split", action="store_true", help="also train the quick recipe on Hammersmith alone, test it on Guy's"
    )
    args = parser.parse_args()
    from brainuad.io.shipped import resolve_model_dir

    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    split = json.loads(SPLIT.read_text())
    cases = prepare(args.out, set(split["val"]) | set(split["test"]))
    part = {
        p: sorted((c for c in cases.values() if c.name.split("-")[0] in split[p]), key=str) for p in ("val", "test")
    }
    results: dict = {"split_file": str(SPLIT.relative_to(ROOT)), "model": args.model}
    run = args.out / "runs" / args.model.replace(":", "-")
    if run.exists():  # a copy: the shipped model's own calibration is never rewritten
        shutil.rmtree(run)
    shutil.copytree(resolve_model_dir(args.model), run, ignore=shutil.ignore_patterns("calibration.json", "*.lock"))
    groups = {
        "all 12 test individuals": part["test"],
        "HH test individuals": [c for c in part["test"] if _site(c) == "HH"],
        "Guy's test individuals": [c for c in part["test"] if _site(c) == "Guys"],
    }
    for k, (name, healthy) in enumerate(groups.items()):
        # Calibrated once (first group); the other groups reuse that threshold.
        results[name] = judge(run, part["val"], healthy, args.out, f"group{k}", calibrate_first=k == 0)
    if args.site_split:
        results["site_split"] = site_split(args.out, split)
    results["cpu_seconds"] = round(_cpu_seconds() - cpu0, 1)
    results["wall_seconds"] = round(time.perf_counter() - wall0, 1)
    (args.out / "t1_healthy.json").write_text(json.dumps(results, indent=1, default=str))
    rows = [(args.model, name, results[name]) for name in groups]
    rows += [("quick recipe, HH only", name, r) for name, r in results.get("site_split", {}).items()
             if isinstance(r, dict) and "healthy_scans" in r]  # fmt: skip
    for model, name, r in rows:
        print(
            f"| {model} | {name} | {len(r['healthy_scans'])} | {r['threshold']:.4g} | "
            f"{np.median(r['calibration_flagged_ml']):.2f} | "
            f"{r['healthy_flagged_ml_median']:.2f} | {r['healthy_flagged_ml_mean']:.2f} | "
            f"{r['healthy']['scans_with_any_finding']}/{len(r['healthy_scans'])} | "
            f"{r['lesion_sensitivity']:.3f} | {r['lesions_ge_1ml'][0]}/{r['lesions_ge_1ml'][1]} | "
            f"{r['false_positives_per_patient_scan']:.1f} | {r['dice_mean']:.3f} | {r['scan_auroc']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
