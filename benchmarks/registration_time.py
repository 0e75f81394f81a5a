"""Registration time and repeatability, before and after issue 27's determinism change, on one real scan.

Usage (from the repository root; CI's machines have 2 cores):
    taskset -c 0,1 python benchmarks/registration_time.py [SCAN] [--repeats 3]

Each setting runs in fresh subprocesses (ITK reads its thread count once per process): ``before`` = ANTs seed 0 (which
ANTs reads as "seed from the clock") on 2 ITK threads, as brainuad ran until issue 27; ``after`` = seed 1 on one ITK
thread, as now. It prints the wall and CPU seconds of each registration (to the MNI template at 2 mm, as
``builtin:t2``'s ``paper-2mm`` preset does) and the largest difference between the repeated matrices.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

DEFAULT_SCAN = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "healthy" / "IXI002-Guys-0828-T2_brain.nii.gz"
)
SETTINGS = {"before": (0, 2), "after": (1, 1)}  # ANTs seed, ITK threads


def run_once(scan: str, ants_seed: int, threads: int) -> dict:
    import time

    import brainuad.preprocess.registration as registration

    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)  # after brainuad's import, before ANTs starts
    registration.ants_seed = lambda seed: ants_seed
    from brainuad.io.volumes import load_volume
    from brainuad.preprocess.templates import mni_template_at

    volume = load_volume(scan, "image")
    template = mni_template_at("t1", 2)
    wall, cpu = time.perf_counter(), time.process_time()
    matrix = registration.affine_between(template, volume)
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "matrix": matrix.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scan", nargs="?", default=str(DEFAULT_SCAN))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_once(args.scan, *args.child)))
        return
    import numpy as np

    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for _ in range(args.repeats):  # interleaved, so that the machine's load falls on both alike
        for name, (seed, threads) in SETTINGS.items():
            cmd = [sys.executable, __file__, args.scan, "--child", str(seed), str(threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            runs[name].append(json.loads(out))
    report = {}
    for name, results in runs.items():
        matrices = [np.asarray(r["matrix"]) for r in results]
        report[name] = {
            "ants_seed_itk_threads": SETTINGS[name],
            "wall_s": [round(r["wall_s"], 1) for r in results],
            "cpu_s": [round(r["cpu_s"], 1) for r in results],
            "max_matrix_difference": float(max(np.abs(m - matrices[0]).max() for m in matrices)),
        }
    print(json.dumps({"scan": args.scan, **report}, indent=2))


if __name__ == "__main__":
    main()
