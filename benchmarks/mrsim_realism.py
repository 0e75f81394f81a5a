"""Realism check of the MR simulator: simulated T2 or FLAIR against real scans of the same contrast.

Inside each brain mask, a 3-class Gaussian mixture (scikit-learn, same settings for every image) gives the CSF, grey-
and white-matter class means: the ratios GM/WM and CSF/WM, and the class fractions, are compared, with the intensity
histograms (÷ the white-matter mean), in one figure.

    python benchmarks/mrsim_realism.py [--contrast t2] [--data ../shared/data] [--n 20] [--figure FIG]

Real references. T2: IXI002 (healthy, HD-BET mask) and the MNI152 T2 template. FLAIR: the one real healthy FLAIR
(healthy_other/synthsr-FLAIR_head, skull on: brainuad's skull strip gives its mask), the six BraTS 2018 FLAIRs and MS
patient07's FLAIR (skull-stripped; the lesion label is removed from the mask, so only normal-appearing tissue
counts). The simulated scans are 1 mm, skull-stripped (``skull=False``), one per BrainWeb anatomy, each with its own
random sequence (T2 TSE or FLAIR with a CSF-nulling TI and an imperfect inversion, 1.5 or 3 T), pose, bias field and
noise.
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


#: The tissue order of the GMM's sorted class means (dark to bright) in each contrast.
TISSUE_ORDER = {"t2": ("wm", "gm", "csf"), "flair": ("csf", "wm", "gm")}


def tissue_classes(values: np.ndarray, contrast: str = "t2", seed: int = 0) -> dict[str, float]:
    """Class means (÷ WM mean) and fractions (dark to bright) from a 3-class GMM on brain intensities."""
    rng = np.random.default_rng(seed)
    sample = rng.choice(values, min(200_000, values.size), replace=False)[:, None]
    gmm = GaussianMixture(3, random_state=seed, n_init=2).fit(sample)
    order = np.argsort(gmm.means_[:, 0])
    means = dict(zip(TISSUE_ORDER[contrast], gmm.means_[order, 0]))
    return {
        "gm_wm": float(means["gm"] / means["wm"]),
        "csf_wm": float(means["csf"] / means["wm"]),
        "wm_mean": float(means["wm"]),
        "fractions": [float(w) for w in gmm.weights_[order]],
    }


def brain_values(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    values = image[mask & np.isfinite(image)].astype(np.float64)
    return values[values > np.percentile(values, 0.5)]  # drop the mask's edge zeros


def real_t2(data: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The real T2 references: each image and its brain mask."""
    ixi = nib.load(data / "healthy/IXI002-Guys-0828-T2_brain.nii.gz").get_fdata()
    ixi_mask = nib.load(data / "healthy/IXI002-Guys-0828-T2_brainmask.nii.gz").get_fdata() > 0
    mni = nib.load(data / "templates/MNI152_T2_1mm_brain.nii.gz").get_fdata()
    mni_mask = nib.load(data / "templates/MNI152_T1_1mm_brain_mask.nii.gz").get_fdata() > 0
    return {"IXI002 T2 (real, 1.5 T)": (ixi, ixi_mask & (ixi > 0)), "MNI152 T2 template": (mni, mni_mask & (mni > 0))}


def real_flair(data: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The real FLAIR references: the healthy head (brainuad's skull strip), BraTS and MS outside their lesions."""
    from brainuad.io.volumes import load_volume
    from brainuad.preprocess.skullstrip import skull_strip

    head = load_volume(data / "healthy_other/synthsr-FLAIR_head.nii.gz")
    mask, _ = skull_strip(head)
    refs = {"healthy FLAIR (real, 3D)": (head.array, mask & (head.array > 0))}
    cases = [(c / f"{c.name}_flair.nii.gz", c / f"{c.name}_seg.nii.gz") for c in sorted((data / "brats2018").iterdir())]
    cases.append((data / "ms/patient07/FLAIR.nii.gz", data / "ms/patient07/GOLD_STANDARD.nii.gz"))
    for image_path, label_path in cases:
        image = nib.load(image_path).get_fdata()
        lesion = nib.load(label_path).get_fdata() > 0
        refs[f"{image_path.parent.name} FLAIR (patient, outside lesion)"] = (image, (image > 0) & ~lesion)
    return refs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contrast", default="t2", choices=sorted(TISSUE_ORDER), help="the contrast to simulate")
    parser.add_argument("--data", default="../shared/data", type=Path)
    parser.add_argument("--n", type=int, default=20, help="simulated scans (one per anatomy, cycling)")
    parser.add_argument("--figure", default=None, type=Path, help="default: docs/figures/mrsim_realism[_flair].png")
    parser.add_argument("--json", default=None, type=Path, help="default: benchmarks/out/mrsim_realism[_flair].json")
    args = parser.parse_args()
    suffix = "" if args.contrast == "t2" else f"_{args.contrast}"
    args.figure = args.figure or Path(f"docs/figures/mrsim_realism{suffix}.png")
    args.json = args.json or Path(f"benchmarks/out/mrsim_realism{suffix}.json")
    label = f"simulated {args.contrast.upper()}"

    real = real_t2(args.data) if args.contrast == "t2" else real_flair(args.data)
    results, histograms, slices = {}, {}, {}
    for name, (image, mask) in real.items():
        values = brain_values(image, mask)
        classes = tissue_classes(values, args.contrast)
        results[name] = classes
        histograms[name] = np.histogram(values / classes["wm_mean"], BINS, density=True)[0]
        slices[name] = image[:, :, int(np.argmax(mask.sum((0, 1))))]

    anatomies = mrsim.find_anatomies(args.data / "brainweb")
    sim_classes, sim_hist, cpu, wall, sequences = [], [], [], [], []
    for i in range(args.n):
        labels = mrsim.load_anatomy(anatomies[i % len(anatomies)])
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        subject = mrsim.simulate(labels, seed=i, contrast=args.contrast, spacing=1.0, skull=False)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        wall.append(time.perf_counter() - t0)
        cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
        sequences.append({"field_t": subject.sequence.field_t, "tr": subject.sequence.tr, "te": subject.sequence.te})
        values = brain_values(subject.image.array, subject.brain)
        classes = tissue_classes(values, args.contrast)
        sim_classes.append(classes)
        sim_hist.append(np.histogram(values / classes["wm_mean"], BINS, density=True)[0])
        if i == 0:
            slices[f"{label} (BrainWeb, 1 mm)"] = subject.image.array[:, :, subject.image.shape[2] // 2]
        print(f"sim {i:2d} {subject.anatomy}: GM/WM {classes['gm_wm']:.2f} CSF/WM {classes['csf_wm']:.2f} "
              f"({subject.sequence.field_t} T, TR {subject.sequence.tr:.0f}, TE {subject.sequence.te:.0f}) "
              f"{cpu[-1]:.1f} s CPU", flush=True)  # fmt: skip
    gm_wm = np.array([c["gm_wm"] for c in sim_classes])
    csf_wm = np.array([c["csf_wm"] for c in sim_classes])
    results[label] = {
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

    fig = plt.figure(figsize=(15, 10))
    ax = fig.add_subplot(2, 2, 1)
    centres = (BINS[:-1] + BINS[1:]) / 2
    band = np.array(sim_hist)
    ax.fill_between(centres, band.min(0), band.max(0), color="tab:orange", alpha=0.3, label=f"{label} (range)")
    ax.plot(centres, np.median(band, 0), color="tab:orange", label=f"{label} (median of {args.n})")
    colours = plt.get_cmap("tab10")
    for k, (name, hist) in enumerate(histograms.items()):
        ax.plot(centres, hist, color="k" if k == 0 else colours(k % 10 if k % 10 != 1 else 9), label=name, lw=1)
    ax.set(xlabel="intensity / white-matter mean (GMM)", ylabel="density", title="Brain intensity histograms")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(2, 2, 2)
    names = [*list(real), label]
    where = np.arange(len(names))
    for k, (key, ratio) in enumerate((("gm_wm", "GM/WM"), ("csf_wm", "CSF/WM"))):
        values = [results[n][key] for n in real] + [results[label][f"{key}_median"]]
        ax.bar(where + 0.4 * k, values, 0.38, label=ratio)
        low, high = results[label][f"{key}_range"]
        ax.errorbar(where[-1] + 0.4 * k, values[-1], yerr=[[values[-1] - low], [high - values[-1]]], color="k",
                    capsize=4)  # fmt: skip
    ax.set_xticks(where + 0.2, [n.split(" (")[0].replace(" FLAIR", "") for n in names], rotation=30, ha="right",
                  fontsize=7)  # fmt: skip
    ax.set(ylabel="class-mean ratio", title="Tissue intensity ratios (3-class GMM in the brain)")
    ax.legend()
    shown = [*list(slices)[:2], list(slices)[-1]]  # two real scans and one simulated
    for k, name in enumerate(shown):
        image = slices[name]
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
