"""Train on the real healthy data in ../shared/data at reduced size (CPU) and test on a held-out healthy scan.

Usage (from the repository root):
    python benchmarks/train_real.py [--epochs 60] [--out benchmarks/out/train_real]

Healthy T2 data here is scarce: one real IXI subject (IXI002) and two templates (FSL MNI152 T2, SPM avg152T2). The
templates are the training set (with augmentation); IXI002, a real individual, is held out. ``--contrast t1`` uses the
T1 scans instead: two more real individuals (IXI012, IXI015 — heads, skull-stripped by preprocessing) train with the
two T1 templates, and IXI002's T1 is held out. The crop is the paper's field of view at 2 mm (``paper-2mm``,
80×96×48) and the network has the paper's structure with fewer channels.
``--synthetic N`` adds N synthetic healthy T2 scans (``brainuad.data.synthetic``) to the training set; ``--method
spatial-ae`` trains the paper's spatial-latent variant (5×6×3 latent grid at 2 mm) instead of the dense one.
Reported: the held-out scan's mean squared error inside the brain for (a) the model's reconstruction, (b) the mean
training image — a model that learned nothing beyond the average brain does no better than (b) — and (c) the single
training image closest to the held-out scan, a stricter reference; and, as a diagnostic, (d) the mean image with its
contrast fitted to the held-out scan (an oracle: how much of a gain contrast alone can give).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# Per contrast: the training scans and the held-out real individual. T2 has one real individual only (held out), so
# its training set is the two templates; T1 has three, so two (heads, skull-stripped by preprocessing) train with the
# two T1 templates and IXI002 is held out again.
SCANS = {
    "t2": (
        ["templates/MNI152_T2_1mm_brain.nii.gz", "templates/avg152T2.nii.gz"],
        "healthy/IXI002-Guys-0828-T2_brain.nii.gz",
    ),
    "t1": (
        [
            "templates/MNI152_T1_1mm_brain.nii.gz",
            "templates/avg152T1.nii.gz",
            "healthy/IXI012-HH-1211-T1_2mm_head.nii.gz",
            "healthy/IXI015-HH-1258-T1_2mm_head.nii.gz",
        ],
        "healthy/IXI002-Guys-0828-T1_brain.nii.gz",
    ),
}


def run(
    out: Path,
    epochs: int,
    steps: int,
    lr: float,
    channels: tuple[int, int, int, int],
    latent: int,
    threads: int,
    synthetic: int = 0,
    kind: str = "ae",
    spatial_channels: int = 16,
    figure: Path | None = None,
    contrast: str = "t2",
) -> dict:
    if synthetic and contrast != "t2":  # before any work
        raise SystemExit("--synthetic makes T2-weighted scans; use it with --contrast t2")
    import torch

    torch.set_num_threads(threads)
    from brainuad.config import Config, ModelConfig, PreprocessConfig, TrainConfig
    from brainuad.preprocess.pipeline import load_case, preprocess_file
    from brainuad.report.figures import plot_reconstruction_panel
    from brainuad.train.checkpoints import load_model
    from brainuad.train.loop import train

    train_scans, held_out_scan = SCANS[contrast]
    config = PreprocessConfig(preset="paper-2mm")
    for rel in train_scans:
        preprocess_file(DATA / rel, out / "train", config)
    if synthetic:
        from brainuad.data.synthetic import write_cohort

        cohort = write_cohort(out / "synthetic", synthetic, 0, 0)
        for path in sorted(cohort.healthy.glob("*.nii.gz")):
            preprocess_file(path, out / "train", config)
    _, held_out = preprocess_file(DATA / held_out_scan, out / "test", config)
    start = time.perf_counter()
    result = train(
        [out / "train"],
        out / "run",
        Config(
            model=ModelConfig(
                kind=kind,
                channels=channels,
                stem_channels=channels[0] // 2,
                latent=latent,
                spatial_channels=spatial_channels,
            ),
            training=TrainConfig(
                epochs=epochs, batch_size=2, lr=lr, val_fraction=0.0, device="cpu", augment="on", steps_per_epoch=steps
            ),
        ),
        resume=(out / "run" / "config.json").exists(),
        progress=True,
    )
    seconds = time.perf_counter() - start
    model, _ = load_model(out / "run", "last.safetensors")
    case = load_case(held_out)
    x = torch.from_numpy(case.image.array)[None, None]
    with torch.no_grad():
        reconstruction = model(x)[0, 0].numpy()
    brain = case.brain_mask.array
    train_folders = [p for p in sorted((out / "train").iterdir()) if p.is_dir()]
    train_images = np.stack([load_case(p).image.array for p in train_folders])
    mean_image = train_images.mean(axis=0)
    mse = lambda a: float(((a - case.image.array)[brain] ** 2).mean())  # noqa: E731
    # A stricter reference than the mean: the training scan that happens to match the held-out one best.
    training_mse = [mse(image) for image in train_images]
    closest = int(np.argmin(training_mse))
    mean_mse, model_mse = mse(mean_image), mse(reconstruction)
    # How much of a gain over the mean is contrast alone: the mean image rescaled (a·mean + b) to fit the held-out
    # scan by least squares — an oracle, since it uses the held-out scan; no model sees that.
    design = np.stack([mean_image[brain], np.ones(int(brain.sum()))], axis=1)
    scale, offset = np.linalg.lstsq(design, case.image.array[brain], rcond=None)[0]
    middle = case.image.shape[2] // 2
    plot_reconstruction_panel(
        case.image.array[:, :, middle],
        {
            f"mean training image\nMSE {mean_mse:.4f}": mean_image[:, :, middle],
            f"closest: {train_folders[closest].name[:14]}\nMSE {training_mse[closest]:.4f}": train_images[closest][
                :, :, middle
            ],
            f"{kind} reconstruction\nMSE {model_mse:.4f}": reconstruction[:, :, middle],
        },
        figure or out / "held_out.png",
        title=f"held-out {Path(held_out_scan).name[:-7]} (axial slice {middle}); MSE inside its brain",
    )
    return {
        "model": kind if kind == "ae" else f"{kind} ({spatial_channels} channels)",
        "epochs": result.epochs_done,
        "train_seconds": round(seconds, 1),
        "final_train_loss": result.history[-1]["train_loss"],
        "contrast": contrast,
        "training_scans": len(train_scans) + synthetic,
        "synthetic_training_scans": synthetic,
        "held_out": held_out_scan,
        "held_out_mse_model": round(model_mse, 5),
        "held_out_mse_mean_training_image": round(mean_mse, 5),
        "held_out_mse_closest_training_image": round(training_mse[closest], 5),
        "closest_training_image": train_folders[closest].name,
        "held_out_mse_mean_image_contrast_fitted_oracle": round(mse(scale * mean_image + offset), 5),
        "held_out_mse_zero_image": round(mse(np.zeros_like(mean_image)), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/train_real"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps-per-epoch", type=int, default=25)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--channels", type=int, nargs=4, default=[16, 32, 64, 128])
    parser.add_argument("--latent", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--synthetic", type=int, default=0, help="add N synthetic healthy T2 scans to the training set")
    parser.add_argument("--method", choices=["ae", "spatial-ae"], default="ae", help="what to train (train --method)")
    parser.add_argument("--spatial-channels", type=int, default=16, help="channels of the spatial latent (spatial-ae)")
    parser.add_argument("--contrast", choices=sorted(SCANS), default="t2", help="which real healthy scans to use")
    parser.add_argument("--figure", type=Path, help="where to write the held-out panel (default OUT/held_out.png)")
    args = parser.parse_args()
    print(
        json.dumps(
            run(
                args.out,
                args.epochs,
                args.steps_per_epoch,
                args.lr,
                tuple(args.channels),
                args.latent,
                args.threads,
                args.synthetic,
                args.method,
                args.spatial_channels,
                args.figure,
                args.contrast,
            ),
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
