"""The ``segment`` model (self-supervised anomaly segmentation, issue #33): its named synthetic tasks, the held-out
task, the patch sampler, contrast randomisation, and the chain train → calibrate → detect → evaluate on tiny volumes."""

import json
import math

import numpy as np
import pytest
import torch

from brainuad.cli import main
from brainuad.config import ConfigError
from brainuad.models.anomalies import TASKS, TaskSettings, plant_task, plant_tasks
from brainuad.models.base import ModelConfig
from brainuad.models.segment import (
    SegmentOptions,
    heldout_batch,
    label_ap,
    randomise_contrast,
    sample_patches,
    tissue_classes,
)


def _brain(shape=(40, 40, 32), seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in shape], indexing="ij")
    brain = (coords[0] ** 2 / 0.8 + coords[1] ** 2 / 0.9 + coords[2] ** 2 / 0.8) < 1
    # Folded like a cortex (a deformation of flat tissue would change nothing), with noise.
    tissue = (
        0.5
        + 0.2 * torch.sin(17 * coords[0] + 9 * coords[2]) * torch.cos(13 * coords[1])
        + 0.05 * torch.rand(shape, generator=g)
    )
    return torch.where(brain, tissue, torch.zeros(shape)), brain


@pytest.mark.parametrize("task", TASKS)
def test_each_task_plants_inside_the_brain_at_the_stated_sizes(task):
    volume, brain = _brain()
    others = torch.stack([_brain(seed=s)[0] for s in (1, 2)])
    settings = TaskSettings(min_voxels=20, max_brain_fraction=0.1, max_count=1)
    planted = 0
    for seed in range(12):
        torch.manual_seed(seed)
        out, label = plant_task(volume, task, others, settings)
        assert out.shape == volume.shape and label.shape == volume.shape
        assert float(label.min()) >= 0 and float(label.max()) <= 1  # labels in range
        assert torch.equal(out[~brain], volume[~brain]) and float(label[~brain].abs().max()) == 0  # brain only
        assert float(out.min()) >= 0 and float(out.max()) <= 1
        changed = label > 0
        if changed.any():
            planted += 1
            # Where the label says "changed", the scan changed; far from every label, it did not.
            core = label >= 0.5 * float(label.max())
            assert float((out - volume).abs()[core].mean()) > 0.01
            size = int(core.sum())
            # Soft borders and the brain's edge shave a blob, strong deformation widens it: within a factor ~3.
            assert size <= 3 * settings.max_brain_fraction * int(brain.sum())
    assert planted >= 6, f"{task}: an anomaly was planted in only {planted} of 12 draws"


def test_unknown_task_and_bad_options_are_refused():
    volume, _ = _brain()
    with pytest.raises(ValueError, match="unknown synthetic task 'lesion'"):
        plant_task(volume, "lesion")
    with pytest.raises(ConfigError, match="holdout_task must be one of"):
        SegmentOptions(tasks=("intensity", "patch"), holdout_task="poisson")
    with pytest.raises(ConfigError, match="unknown task"):
        SegmentOptions(tasks=("intensity", "mood"))
    with pytest.raises(ConfigError, match="patch_size"):
        ModelConfig(kind="segment", channels=(8, 16, 32), options={"patch_size": (20, 20, 20)})


def test_the_held_out_task_is_never_trained_on_and_validates_the_same_way_each_time():
    options = SegmentOptions(holdout_task="deformation")
    assert options.training_tasks == ("intensity", "patch", "poisson")
    assert "deformation" not in options.training_tasks
    x = torch.stack([_brain(seed=s)[0] for s in range(3)])[:, None]
    state = torch.random.get_rng_state()
    labels_a, corrupted_a = heldout_batch(x, options, seed=5)
    labels_b, corrupted_b = heldout_batch(x, options, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is left alone
    assert torch.equal(labels_a, labels_b) and torch.equal(corrupted_a, corrupted_b)  # fixed validation set
    assert float(labels_a.sum()) > 0  # every validation scan holds an anomaly
    # A perfect score reaches AP 1; an uninformed one sits near the planted share.
    brain = x > 0
    assert label_ap(labels_a, labels_a, brain) == pytest.approx(1.0)
    assert label_ap(torch.rand_like(labels_a), labels_a, brain) < 0.5
    assert math.isnan(label_ap(torch.rand_like(x), torch.zeros_like(x), brain))


def test_training_draws_only_the_training_tasks(monkeypatch):
    import brainuad.models.anomalies as anomalies

    seen = []
    real = anomalies.plant_task

    def spy(volume, task, *args, **kwargs):
        seen.append(task)
        return real(volume, task, *args, **kwargs)

    monkeypatch.setattr(anomalies, "plant_task", spy)
    x = torch.stack([_brain(seed=s)[0] for s in range(4)])[:, None]
    options = SegmentOptions()
    for seed in range(8):
        torch.manual_seed(seed)
        plant_tasks(x, options.training_tasks, TaskSettings(fraction=1.0))
    assert seen and options.holdout_task not in seen and set(seen) <= set(options.training_tasks)


def test_patch_sampler_takes_brain_patches_of_the_given_size():
    x = torch.stack([_brain(seed=s)[0] for s in range(3)])[:, None]
    g = torch.Generator().manual_seed(0)
    patches = sample_patches(x, (16, 16, 16), g)
    assert patches.shape == (3, 1, 16, 16, 16)
    assert all(bool((p > 0).any()) for p in patches)  # centred on brain
    clipped = sample_patches(x, (64, 64, 64), g)  # larger than the volume: clipped (to multiples of 8)
    assert clipped.shape == (3, 1, 40, 40, 32)
    again = sample_patches(x, (16, 16, 16), torch.Generator().manual_seed(0))
    assert torch.equal(again, patches)  # seeded: a run replays its patches


def test_contrast_randomisation_keeps_the_brain_and_varies_the_contrast():
    image, brain = _brain()
    classes = torch.from_numpy(tissue_classes(image.numpy()))
    assert set(np.unique(classes.numpy())) <= {0, 1, 2, 3} and torch.equal(classes > 0, image > 0)
    g = torch.Generator().manual_seed(1)
    a, b = randomise_contrast(image, classes, g), randomise_contrast(image, classes, g)
    for out in (a, b):
        assert float(out[~brain].abs().max()) == 0 and float(out.min()) >= 0 and float(out.max()) <= 1
        assert bool((out[brain] > 0).all())  # the brain stays > 0 (the tasks find it there)
    assert float((a - b).abs()[brain].mean()) > 0.02  # two draws, two contrasts


def _plant_lesion(scan_path, centre, radius, out_dir, name):
    """A BraTS-style case: the scan with a bright sphere, and its label file."""
    import nibabel as nib

    from conftest import write_nifti

    img = nib.load(str(scan_path))
    data = np.asarray(img.dataobj, dtype=np.float32).copy()
    sphere = (sum((g - c) ** 2 for g, c in zip(np.indices(data.shape), centre)) <= radius**2) & (data > 0)
    data[sphere] = float(np.percentile(data[data > 0], 99.9)) * 1.4
    write_nifti(out_dir / name / f"{name}_t2.nii.gz", data, img.affine)
    write_nifti(out_dir / name / f"{name}_seg.nii.gz", sphere.astype(np.uint8) * 2, img.affine)


def _tiny_cli():
    return ["--method", "segment", "--stem-channels", "4", "--channels", "8", "8", "--patch-size", "32", "32", "16",
            "--val-every-steps", "4", "--epochs", "1", "--steps-per-epoch", "8", "--batch-size", "2", "--device",
            "cpu", "--quiet"]  # fmt: skip


def test_train_calibrate_detect_evaluate_on_tiny_volumes(tmp_path, skull_stripped_scan):
    prep = tmp_path / "prep"
    assert main(["preprocess", str(skull_stripped_scan), "--out", str(prep), "--preset", "paper-2mm", "--quiet"]) == 0
    run = tmp_path / "run"
    assert main(["train", "--data", str(prep), "--out", str(run), *_tiny_cli()]) == 0
    curve = json.loads((run / "learning_curve.json").read_text())
    assert curve["holdout_task"] == "poisson" and [p["step"] for p in curve["points"]] == [4, 8]
    assert all(p["cpu_seconds"] > 0 and 0 <= p["heldout_ap"] <= 1 for p in curve["points"])
    check = json.loads((run / "summary.json").read_text())["reconstruction_check"]
    assert {"heldout_ap", "heldout_ap_mean_image", "segments_planted_anomalies"} <= set(check)
    _plant_lesion(skull_stripped_scan, (40, 55, 45), 6, tmp_path / "tune", "tune01")
    _plant_lesion(skull_stripped_scan, (30, 45, 40), 5, tmp_path / "cases", "case01")
    assert main(["calibrate", "--model", str(run), "--labelled", str(tmp_path / "tune"), "--device", "cpu"]) == 0
    out = tmp_path / "detect"
    scan = tmp_path / "cases" / "case01" / "case01_t2.nii.gz"
    assert main(["detect", str(scan), "--model", str(run), "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    assert next(out.rglob("report.html")).is_file() and next(out.rglob("*anomaly*.nii.gz")).is_file()
    evaluation = tmp_path / "eval"
    args = ["evaluate", "--model", str(run), "--cases", str(tmp_path / "cases"), "--out", str(evaluation)]
    assert main([*args, "--quiet", "--device", "cpu"]) == 0
    voxels = json.loads((evaluation / "summary.json").read_text())["voxels"]
    assert 0 <= voxels["ap_pooled"] <= 1


def test_training_with_whole_epochs_ends_validated_and_saved(tmp_path):
    """steps_per_epoch 0 (one pass over the training scans an epoch) and a validation interval longer than the run:
    every epoch runs, the last step is validated, and the best weights exist (the learned-nothing check reads them)."""
    from brainuad.config import Config, TrainConfig
    from brainuad.train.loop import train
    from tiny import write_cases

    data = write_cases(tmp_path / "data", 5)
    config = Config(
        model=ModelConfig(kind="segment", stem_channels=4, channels=(8, 8),
                          options={"patch_size": (16, 16, 16), "val_every_steps": 100}),
        training=TrainConfig(epochs=3, batch_size=2, device="cpu", augment="off", val_fraction=0.4),
    )  # fmt: skip
    train([data], tmp_path / "run", config, progress=False)
    curve = json.loads((tmp_path / "run" / "learning_curve.json").read_text())
    assert [p["step"] for p in curve["points"]] == [6]  # 3 training scans, batch 2: 2 steps an epoch, 3 epochs
    assert (tmp_path / "run" / "model.safetensors").is_file()
