"""Time and peak memory to preprocess one raw scan, per stage, on this machine's CPU.

Usage (from the repository root; CI's machines have 2 cores):
    python benchmarks/preprocess.py [SCAN] [--preset paper] [--threads 2]

Default scan: ../shared/data/stroke/T2_head.nii.gz (a raw T2 head: skull stripping and registration both run).
Each run happens in a fresh subprocess so the peak resident memory (ru_maxrss) belongs to that run alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_SCAN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "stroke" / "T2_head.nii.gz"


def run_once(scan: str, preset: str, threads: int, out: str) -> dict:
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    import resource

    import torch

    torch.set_num_threads(threads)
    from brainuad.config import PreprocessConfig
    from brainuad.preprocess.pipeline import preprocess_file

    start = time.perf_counter()
    _, folder = preprocess_file(scan, out, PreprocessConfig(preset=preset), force=True)
    total = time.perf_counter() - start
    record = json.loads((Path(folder) / "record.json").read_text())
    return {
        "scan": scan,
        "preset": preset,
        "threads": threads,
        "total_s": round(total, 2),
        "stages_s": {k: round(v, 2) for k, v in record["timings"].items()},
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
        "skull_strip_method": record["skull_strip_method"],
        "qc": record["qc"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scan", nargs="?", default=str(DEFAULT_SCAN))
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_out:
        print(json.dumps(run_once(args.scan, args.preset, args.threads, args.child_out)))
        return
    import tempfile

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            cmd = [
                sys.executable,
                __file__,
                args.scan,
                "--preset",
                args.preset,
                "--threads",
                str(args.threads),
                "--child-out",
                tmp,
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            results.append(json.loads(out))
    best = min(results, key=lambda r: r["total_s"])
    print(json.dumps({"runs_total_s": [r["total_s"] for r in results], "best": best}, indent=2))
    target_ok = best["total_s"] <= 20 and best["peak_rss_gib"] <= 3
    print(f"target (<= 20 s, <= 3 GiB on 2 cores): {'met' if target_ok else 'NOT met'}")


if __name__ == "__main__":
    main()
