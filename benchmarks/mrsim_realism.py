"""Realism check of the MR simulator: simulated T2 vs a real T2 (IXI002) and the MNI152 T2 template.

Inside each brain mask, intensities are divided by the white-matter mean and a 3-class Gaussian mixture (scikit-learn,
same settings for every image) gives the CSF, grey- and white-matter class means: the ratios GM/WM and CSF/WM, and
the class fractions, are compared, with the intensity histograms, in one figure.

    python benchmarks/mrsim_realism.py [--data ../shared/data] [--n 20] [--figure docs/figures/mrsim_realism.png]

The simulated scans are 1 mm, skull-stripped (``skull=False``, the real ones are), one per BrainWeb anatomy, each
with its own random sequence (T2 TSE, 1.5 or 3 T), pose, bias field and noise.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
from sklearn.mixture import GaussianMixture

from brainuad.data import mrsim

BINS = np.linspace(0.0, 4.0, 161)


def tissue_classes(values: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Class means (÷ WM mean) and fractions from a 3-class GMM on brain intensities (sorted: WM < GM < CSF on T2)."""
    rng = np.random.default_rng(seed)
    sample = rng.choice(values, min(200_000, values.size), replace=False)[:, None]
    gmm = GaussianMixture(3, random_state=seed, n_init=2).fit(sample)
    order = np.argsort(gmm.means_[:, 0])
    means, weights = gmm.means_[order, 0], gmm.weights_[order]
    return {
        "gm_wm": float(means[1] / means[0]),
        "csf_wm": float(means[2] / means[0]),
        "wm_mean": float(means[0]),
        "fractions": [float(w) for w in weights],
    }


def brain_values(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    values = image[mask & np.isfinite(image)].astype(np.float64)
    return values[values > np.percentile(values, 0.5)]  # drop the mask's edge zeros


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data", type=Path)
    parser.add_argument("--n", type=int, default=20, help="simulated scans (one per anatomy, cycling)")
    parser.add_argument("--figure", default="docs/figures/mrsim_realism.png", type=Path)
    parser.add_argument("--json", default="benchmarks/out/mrsim_realism.json", type=Path)
    args = parser.parse_args()

    real = {}
    ixi = nib.load(args.data / "healthy/IXI002-Guys-0828-T2_brain.nii.gz").get_fdata()
    ixi_mask = nib.load(args.data / "healthy/IXI002-Guys-0828-T2_brainmask.nii.gz").get_fdata() > 0
    real["IXI002 T2 (real, 1.5 T)"] = (ixi, ixi_mask & (ixi > 0))
    mni = nib.load(args.data / "templates/MNI152_T2_1mm_brain.nii.gz").get_fdata()
    mni_mask = nib.load(args.data / "templates/MNI152_T1_1mm_brain_mask.nii.gz").get_fdata() > 0
    real["MNI152 T2 template"] = (mni, mni_mask & (mni > 0))

    results, histograms, slices = {}, {}, {}
    for name, (image, mask) in real.items():
        values = brain_values(image, mask)
        classes = tissue_classes(values)
        results[name] = classes
        histograms[name] = np.histogram(values / classes["wm_mean"], BINS, density=True)[0]
        slices[name] = image[:, :, int(np.argmax(mask.sum((0, 1))))]

    anatomies = mrsim.find_anatomies(args.data / "brainweb")
    sim_classes, sim_hist, cpu, wall, sequences = [], [], [], [], []
    for i in range(args.n):
        labels = mrsim.load_anatomy(anatomies[i % len(anatomies)])
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        subject = mrsim.simulate(labels, seed=i, contrast="t2", spacing=1.0, skull=False)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        wall.append(time.perf_counter() - t0)
        cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
        sequences.append({"field_t": subject.sequence.field_t, "tr": subject.sequence.tr, "te": subject.sequence.te})
        values = brain_values(subject.image.array, subject.brain)
        classes = tissue_classes(values)
        sim_classes.append(classes)
        sim_hist.append(np.histogram(values / classes["wm_mean"], BINS, density=True)[0])
        if i == 0:
            slices["simulated T2 (BrainWeb, 1 mm)"] = subject.image.array[:, :, subject.image.shape[2] // 2]
        print(f"sim {i:2d} {subject.anatomy}: GM/WM {classes['gm_wm']:.2f} CSF/WM {classes['csf_wm']:.2f} "
              f"({subject.sequence.field_t} T, TR {subject.sequence.tr:.0f}, TE {subject.sequence.te:.0f}) "
              f"{cpu[-1]:.1f} s CPU", flush=True)  # fmt: skip
    gm_wm = np.array([c["gm_wm"] for c in sim_classes])
    csf_wm = np.array([c["csf_wm"] for c in sim_classes])
    results["simulated T2"] = {
        "n": args.n,
        "gm_wm_median": float(np.median(gm_wm)),
        "gm_wm_range": [float(gm_wm.min()), float(gm_wm.max())],
        "csf_wm_median": float(np.median(csf_wm)),
        "csf_wm_range": [float(csf_wm.min()), float(csf_wm.max())],
        "fractions_median": np.median([c["fractions"] for c in sim_classes], axis=0).tolist(),
        "cpu_seconds_per_scan_median": float(np.median(cpu)),
        "wall_seconds_per_scan_median": float(np.median(wall)),
        "sequences": sequences,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))

    fig = plt.figure(figsize=(15, 8))
    ax = fig.add_subplot(2, 2, 1)
    centres = (BINS[:-1] + BINS[1:]) / 2
    band = np.array(sim_hist)
    ax.fill_between(centres, band.min(0), band.max(0), color="tab:orange", alpha=0.3, label="simulated T2 (range)")
    ax.plot(centres, np.median(band, 0), color="tab:orange", label=f"simulated T2 (median of {args.n})")
    for (name, hist), colour in zip(histograms.items(), ("k", "tab:blue")):
        ax.plot(centres, hist, color=colour, label=name)
    ax.set(xlabel="intensity / white-matter mean (GMM)", ylabel="density", title="Brain intensity histograms")
    ax.legend(fontsize=8)
    ax = fig.add_subplot(2, 2, 2)
    names = [*list(real), "simulated T2"]
    for k, (key, label) in enumerate((("gm_wm", "GM/WM"), ("csf_wm", "CSF/WM"))):
        values = [results[n][key] for n in real] + [results["simulated T2"][f"{key}_median"]]
        ax.bar(np.arange(3) + 0.4 * k, values, 0.38, label=label)
        sim = results["simulated T2"][f"{key}_range"]
        ax.errorbar(2 + 0.4 * k, values[2], yerr=[[values[2] - sim[0]], [sim[1] - values[2]]], color="k", capsize=4)
    ax.set_xticks(np.arange(3) + 0.2, [n.split(" (")[0] for n in names])
    ax.set(ylabel="class-mean ratio", title="Tissue intensity ratios (3-class GMM in the brain)")
    ax.legend()
    for k, (name, image) in enumerate(slices.items()):
        ax = fig.add_subplot(2, 3, 4 + k)
        ax.imshow(np.rot90(image), cmap="gray", vmin=0, vmax=np.percentile(image[image > 0], 99.5))
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=80)
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "sequences"} for k, v in results.items()}, indent=1))
    print(f"figure -> {args.figure}")


if __name__ == "__main__":
    main()
