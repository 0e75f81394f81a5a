"""The T1 track of docs/results.md: learned (quick recipe) vs normative vs intensity on real T1 lesion cases.

Usage (from the repository root; the 52 real healthy T1 individuals preprocessed at paper-2mm in PREP, the learned
model trained as benchmarks/README.md says):
    python benchmarks/t1_track.py --prep PREP --learned RUN_DIR [--out benchmarks/out/t1_track]

Protocol:
- Healthy data: the subject-level split of benchmarks/splits/t1_2mm.json. The normative and intensity baselines are
  fitted on its training subjects (the learned model was trained on them too), each validated / calibrated on its
  validation subjects. Test subjects are not used here (they score held-out reconstruction: recipe_t1.py evaluate).
- Lesion cases (T1 images): the six BraTS 2018 cases and the MS case patient07. Thresholds are tuned (best pooled
  Dice) on the first two BraTS cases by name only; reported: the other four BraTS cases and patient07 (5 cases).
- Metrics: voxel AP pooled over the reported cases (region: brain mask ∪ lesion), with a 95 % bootstrap interval
  over cases (this script: the reported cases resampled with replacement); mean Dice at the tuned threshold with
  brainuad's bootstrap interval; slice AUROC. With 5 reported cases the intervals are wide.
Writes OUT/t1_track.json and OUT/t1_track.md (the table pasted into docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def voxel_ap_interval(trained, cases, cache: Path, resamples: int, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of the pooled voxel AP, resampling the reported cases (preprocessing is cached).

    Each case's anomaly values are binned once on 4,096 common levels (positives and negatives counted per bin), so a
    resample's pooled AP is a sum of histograms rather than a sort of a million voxels; the binned AP differs from the
    exact one (reported as the point estimate) only by ties within a bin.
    """
    from brainuad.evaluate.labelled import evaluate_case

    truths, scores, missed = [], [], []
    for case in cases:
        evaluation = evaluate_case(trained, case, cache)
        truths.append(evaluation.region_truth().astype(bool))
        scores.append(evaluation.region_scores().astype(np.float64))
        missed.append(int(evaluation.lesion_outside_crop))
    edges = np.quantile(np.concatenate(scores), np.linspace(0, 1, 4097)[1:-1])
    positives, negatives = [], []
    for truth, score in zip(truths, scores):
        index = np.searchsorted(edges, score, side="right")
        positives.append(np.bincount(index[truth], minlength=4096))
        negatives.append(np.bincount(index[~truth], minlength=4096))
    positives, negatives = np.array(positives), np.array(negatives)

    def binned_ap(pick: np.ndarray) -> float:
        pos, neg = positives[pick].sum(0)[::-1], negatives[pick].sum(0)[::-1]  # highest scores first
        total = pos.sum() + sum(missed[i] for i in pick)
        if total == 0:
            return float("nan")
        tp, fp = np.cumsum(pos), np.cumsum(neg)
        precision = np.divide(tp, tp + fp, out=np.zeros(len(tp)), where=(tp + fp) > 0)
        return float(np.sum(precision * pos) / total)

    rng = np.random.default_rng(seed)
    values = [binned_ap(rng.integers(len(cases), size=len(cases))) for _ in range(resamples)]
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return float(low), float(high)


def _reusable(path: Path, run: Path, reported: list[str]) -> dict | None:
    """An evaluation this script wrote before, if it was made with the same weights on the same reported cases."""
    from brainuad.io.provenance import sha256_file

    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    same_model = summary.get("model", {}).get("weights_sha256") == sha256_file(run / "model.safetensors")
    return summary if same_model and summary.get("reported_cases") == reported else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prep", type=Path, required=True, help="preprocessed healthy T1 case folders")
    parser.add_argument("--learned", type=Path, required=True, help="the quick-recipe run folder")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "t1_track")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from recipe_t1 import link_split

    from brainuad.config import Config, ModelConfig, TrainConfig
    from brainuad.data.datasets import find_labelled_cases
    from brainuad.evaluate.calibrate import calibrate
    from brainuad.evaluate.evaluation import evaluate
    from brainuad.infer.trained import TrainedModel
    from brainuad.train.checkpoints import load_model
    from brainuad.train.loop import train

    out = args.out
    split = out / "split"
    link_split(argparse.Namespace(data=args.prep, out=split))
    runs = {"learned (quick recipe)": args.learned}
    timings = {}
    for kind in ("normative", "intensity"):
        run = out / "runs" / kind
        if not (run / "summary.json").is_file():
            start = time.perf_counter()
            config = Config(model=ModelConfig(kind=kind), training=TrainConfig(device="cpu"))
            train([split / "train"], run, config, progress=False, val_data=[split / "val"])
            timings[kind] = round(time.perf_counter() - start, 1)
        runs[kind] = run
    brats = sorted(p for p in (DATA / "brats2018").iterdir() if p.is_dir())
    tune_sources, case_sources = brats[:2], [*brats[2:], DATA / "ms"]
    reported = [c for s in case_sources for c in find_labelled_cases(s, "t1")]
    results: dict = {"tuning_cases": [p.name for p in tune_sources], "reported_cases": [c.name for c in reported]}
    cache = out / "cache"
    for name, run in runs.items():
        start = time.perf_counter()
        summary = _reusable(out / "eval" / run.name / "summary.json", run, [c.name for c in reported])
        if summary is None:
            if load_model(run)[1].model.kind != "intensity":
                calibrate(run, [split / "val"], device="cpu")  # held-out healthy subjects
            summary = evaluate(
                run, case_sources, out / "eval" / run.name, tune_sources=tune_sources, modality="t1",
                cache_dir=cache, device="cpu", progress=False,
            )  # fmt: skip
        ap_ci = voxel_ap_interval(TrainedModel.load(run, "cpu"), reported, cache / "cases", args.resamples)
        results[name] = {
            "run": str(run),
            "voxel_ap_pooled": summary["voxels"]["ap_pooled"],
            "voxel_ap_ci95": ap_ci,
            "dice_mean": summary["voxels"]["dice_mean"],
            "dice_mean_ci95": summary["voxels"]["dice_mean_ci95"],
            "dice_pooled": summary["voxels"]["dice_pooled"],
            "slice_auroc": summary["slices"]["auroc"],
            "slice_auroc_ci95": summary["slices"]["auroc_ci95"],
            "threshold": summary["threshold"],
            "reconstruction_check": summary.get("reconstruction_check"),
            "evaluate_seconds": round(time.perf_counter() - start, 1),
        }
        print(json.dumps({name: results[name]}), flush=True)
    results["fit_seconds"] = timings
    (out / "t1_track.json").write_text(json.dumps(results, indent=2))
    lines = [
        "| method | voxel AP (pooled) [95% CI] | mean Dice [95% CI] | pooled Dice | slice AUROC [95% CI] |",
        "|---|---|---|---|---|",
    ]

    def fmt(value: float, ci: list[float]) -> str:
        return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"

    for name in runs:
        r = results[name]
        lines.append(
            f"| {name} | {fmt(r['voxel_ap_pooled'], r['voxel_ap_ci95'])} | {fmt(r['dice_mean'], r['dice_mean_ci95'])} "
            f"| {r['dice_pooled']:.3f} | {fmt(r['slice_auroc'], r['slice_auroc_ci95'])} |"
        )
    (out / "t1_track.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
