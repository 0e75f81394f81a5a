"""Compare the skull strippers on the heads in ../shared/data: agreement with HD-BET's mask and CPU time.

Usage (from the repository root):
    python benchmarks/skullstrip.py [--threads 2] [--methods deepbet template hd-bet]

Reference: the HD-BET mask shipped with IXI002's T2. The T2 brain is put back into a real T2 head (the stroke
scan's scalp and skull, registered to it: ``brainuad.preprocess.skullstrip.embed_brain_in_head``) so the strippers
see a head.
For the heads without a reference (stroke T2, IXI012/IXI015 T1) the brain volume and the agreement between methods
are reported. ``hd-bet`` needs ``pip install brainuad[hdbet]`` and is skipped without it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=["deepbet", "template", "hd-bet"])
    args = parser.parse_args()
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from brainuad.errors import BrainuadError
    from brainuad.io.volumes import load_volume
    from brainuad.preprocess.skullstrip import STRIPPERS, embed_brain_in_head

    t2 = load_volume(DATA / "healthy/IXI002-Guys-0828-T2_brain.nii.gz")
    reference = load_volume(DATA / "healthy/IXI002-Guys-0828-T2_brainmask.nii.gz", "mask").array
    scans = {
        "IXI002 T2 in a head (vs HD-BET)": embed_brain_in_head(
            t2, reference, load_volume(DATA / "stroke/T2_head.nii.gz")
        ),
        "stroke T2 head": load_volume(DATA / "stroke/T2_head.nii.gz"),
        "IXI012 T1 head (2 mm)": load_volume(DATA / "healthy/IXI012-HH-1211-T1_2mm_head.nii.gz"),
        "IXI015 T1 head (2 mm)": load_volume(DATA / "healthy/IXI015-HH-1258-T1_2mm_head.nii.gz"),
    }
    rows = []
    masks: dict[tuple[str, str], np.ndarray] = {}
    for method in args.methods:
        for name, volume in scans.items():
            try:
                STRIPPERS[method](volume)  # warm-up: model loading is not per-scan time
                start = time.perf_counter()
                mask = STRIPPERS[method](volume)
                seconds = time.perf_counter() - start
            except BrainuadError as exc:
                print(f"{method}: skipped ({exc})")
                break
            masks[(method, name)] = mask
            row = {
                "method": method,
                "scan": name,
                "seconds": round(seconds, 2),
                "volume_ml": round(float(mask.sum() * volume.voxel_volume_ml)),
            }
            if name.startswith("IXI002"):
                row["dice_vs_hdbet_reference"] = round(dice(mask, reference), 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    for name in scans:
        if ("deepbet", name) in masks:
            for other in args.methods:
                if other != "deepbet" and (other, name) in masks:
                    agreement = dice(masks[("deepbet", name)], masks[(other, name)])
                    print(f"agreement deepbet vs {other} on {name}: Dice {agreement:.3f}")


if __name__ == "__main__":
    main()
