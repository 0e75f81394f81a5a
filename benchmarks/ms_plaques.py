"""Where MS patient07's plaques go at 2 mm (issue #26, small lesions): how many the consensus mask holds natively,
how many survive the resampling to the paper-2mm crop, and how many are smaller than what the post-processing can
keep (the 20 mm³ smallest component; the 5 mm median filter, a 3³-voxel window at 2 mm, erases a bright spot under
14 voxels unless its neighbours are bright too).

Usage (from the repository root; needs patient07 preprocessed in an evaluation cache, e.g. by benchmarks/lesions.py):
    python benchmarks/ms_plaques.py [--cache benchmarks/out/lesions/cache/t2/cases/patient07]
    python benchmarks/ms_plaques.py --cache benchmarks/out/resolution/cache/flair/1mm/cases/patient07   # at 1 mm

Writes nothing; prints the table of docs/results.md. No model is involved: it is the ceiling any 2 mm model has.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
BINS = ((0, 0.02), (0.02, 0.1), (0.1, 1.0), (1.0, float("inf")))  # mL


def components_ml(mask: np.ndarray, voxel_ml: float) -> np.ndarray:
    """The volume (mL) of each 26-connected component of ``mask``."""
    import cc3d

    labels, n = cc3d.connected_components(mask.astype(np.uint8), connectivity=26, return_N=True)
    return np.bincount(labels.ravel(), minlength=n + 1)[1:] * voxel_ml


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks/out/lesions/cache/t2/cases/patient07")
    args = parser.parse_args()
    from brainuad.config import PostprocessConfig
    from brainuad.data.datasets import find_labelled_cases
    from brainuad.evaluate.labelled import lesion_on_crop
    from brainuad.infer.postprocessing import median_filter_3d, postprocessing_sizes
    from brainuad.io.volumes import load_volume
    from brainuad.preprocess.cases import load_case

    case = find_labelled_cases(DATA / "ms", "t2")[0]
    native = load_volume(case.label_path, "label")
    pre = load_case(args.cache)
    crop, _ = lesion_on_crop(case, pre)
    sizes = postprocessing_sizes(pre.grid.spacing_mm, PostprocessConfig())
    # What the median filter leaves of a perfect map (1 inside the plaques, 0 elsewhere) at half the contrast:
    filtered = median_filter_3d(crop.astype(np.float32), sizes.median_size) > 0.5
    min_ml = sizes.min_component_voxels * pre.grid.voxel_ml
    on_crop = components_ml(crop, pre.grid.voxel_ml)
    kept = components_ml(filtered, pre.grid.voxel_ml)
    rows = {
        "consensus mask, native 1 mm": components_ml(native.array > 0, native.voxel_volume_ml),
        f"resampled to the {pre.grid.spacing_mm:g} mm crop": on_crop,
        f"on the crop, >= the smallest component ({min_ml * 1000:.0f} mm³; the counted reference lesions)": on_crop[
            on_crop >= min_ml
        ],
        f"a perfect map after the {sizes.median_size}³ median filter, >= the smallest component": kept[kept >= min_ml],
    }
    header = " | ".join(f"{a * 1000:g}–{b * 1000:g} mm³" if b != float("inf") else f">= {a * 1000:g} mm³"
                        for a, b in BINS)  # fmt: skip
    print(f"| stage | plaques | total mL | {header} |")
    print("|---|---|---|" + "---|" * len(BINS))
    for name, volumes in rows.items():
        counts = " | ".join(str(int(((volumes >= a) & (volumes < b)).sum())) for a, b in BINS)
        print(f"| {name} | {volumes.size} | {volumes.sum():.2f} | {counts} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
