"""How much each shipped model flags in a real healthy brain it never saw (issue #26).

Usage (from the repository root):
    python benchmarks/healthy_real.py [--out benchmarks/out/healthy_real]

Scans: the real healthy heads of ../shared/data/healthy_other/ (one T2, one 3D FLAIR, skull on; neither was trained
or calibrated on) with builtin:t2 and builtin:flair, by ``brainuad detect`` with its defaults (the model's shipped
calibration). builtin:t1's held-out healthy individuals are benchmarks/t1_healthy.py's. Every finding in a healthy
brain is a false positive. Writes OUT/healthy_real.json and prints the docs/results.md rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SCANS = {"t2": "healthy_other/niivue-T2w_head.nii.gz", "flair": "healthy_other/synthsr-FLAIR_head.nii.gz"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "healthy_real")
    args = parser.parse_args()
    from brainuad.infer.detect import detect_batch
    from brainuad.io.volumes import read_json

    results = {}
    for name, rel in SCANS.items():
        result = detect_batch([DATA / rel], f"builtin:{name}", args.out / name, device="cpu", force=True,
                              progress=False)  # fmt: skip
        if not result.done:
            results[f"builtin:{name}"] = {"scan": rel, "failed": str(result.failed)}
            continue
        summary = read_json(result.done[0] / "summary.json")
        results[f"builtin:{name}"] = {
            "scan": rel,
            "flagged_ml": summary.get("lesion_volume_ml_native"),
            "findings": summary.get("lesion_count"),
            "scan_score": summary.get("scan_score"),
            "threshold": summary.get("threshold"),
        }
    (args.out / "healthy_real.json").write_text(json.dumps(results, indent=1))
    for model, r in results.items():
        print(f"| {model} | `{r['scan']}` | {r.get('findings')} | {r.get('flagged_ml')} | {r.get('failed', '')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
