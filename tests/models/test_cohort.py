"""Cohort statistics, the normative baseline, the learned-nothing guard and the cohort refusals."""

import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from brainuad.cli import main
from brainuad.config import ConfigError, ModelConfig, quick_recipe
from brainuad.data.datasets import check_one_cohort, modality_from_name
from brainuad.errors import BrainuadError
from brainuad.models import build_model
from brainuad.models.cohort import cohort_centre_spread, cohort_mean, masked_mse, nearest_mse
from brainuad.train.guard import banner, reconstruction_check
from brainuad.train.step import learning_rate, reconstruction_loss
from tiny import SHAPE, TINY_CLI, write_cases


def test_cohort_statistics_are_voxelwise_and_floored():
    volumes = np.stack([np.full((4, 3, 2), v, np.float32) for v in (0.1, 0.2, 0.9)])
    centre, spread = cohort_centre_spread(volumes, "median", floor=0.01)
    assert np.allclose(centre, 0.2) and np.allclose(spread, 1.4826 * 0.1)
    centre, spread = cohort_centre_spread(volumes, "mean", floor=0.01, indices=[0, 1])
    assert np.allclose(centre, 0.15) and np.allclose(spread, 0.05)
    _, spread = cohort_centre_spread(volumes[:1], "median", floor=0.02)
    assert np.allclose(spread, 0.02)  # one scan: no spread, the floor keeps z-scores finite
    assert np.allclose(cohort_mean(volumes, [1, 2]), 0.55)
    mask = np.zeros((4, 3, 2), bool)
    mask[0] = True
    assert masked_mse(volumes[0], volumes[1], mask) == pytest.approx(0.01)
    assert nearest_mse(volumes[0] + 0.05, mask, volumes, [1, 2]) == pytest.approx(0.05**2)


def test_mean_skip_model_starts_at_the_mean_image_and_the_paper_network_is_unchanged():
    config = ModelConfig(stem_channels=4, channels=(4, 8), latent=8, input_shape=(16, 16, 8), input_pool=2)
    assert not hasattr(build_model(config), "mean_image")  # mean_skip off: no buffer, the paper's head
    model = build_model(ModelConfig(**{**config.__dict__, "mean_skip": True}))
    mean = torch.rand(16, 16, 8)
    model.set_mean_image(mean)
    out = model.eval()(torch.rand(2, 1, 16, 16, 8))
    assert torch.allclose(out, mean.expand_as(out))  # head initialised at zero: the mean image exactly
    assert "mean_image" in model.state_dict()  # saved with the weights
    assert ModelConfig().mean_skip is False and ModelConfig().input_pool == 1  # the paper's defaults
    with pytest.raises(ConfigError, match=r"multiple of 16 .input_pool 2 × 3"):
        ModelConfig(channels=(16, 32, 64), input_pool=2, input_shape=(80, 96, 40))
    assert quick_recipe().model.mean_skip and quick_recipe().training.loss_mask


def test_learning_rate_warms_up_then_decays_and_the_loss_can_ignore_the_background():
    tc = quick_recipe().training
    total = 1000
    rates = [learning_rate(tc, step, total) for step in range(total)]
    assert rates[0] == pytest.approx(tc.lr / tc.warmup_steps) and max(rates) == pytest.approx(tc.lr)
    assert rates[-1] < 1e-3 * tc.lr
    target = torch.zeros(1, 1, 4, 4, 4)
    target[..., :2] = 0.5
    output = target.clone()
    output[..., 2:] = 1.0  # wrong only outside the brain
    assert float(reconstruction_loss(output, target, brain_only=True)) == 0.0
    assert float(reconstruction_loss(output, target)) == pytest.approx(0.5)


class _Constant(nn.Module):
    def forward(self, x):
        return torch.full_like(x, 0.5)


class _NearIdentity(nn.Module):
    def forward(self, x):
        return x * 0.995


def test_guard_fires_on_a_constant_model_and_stays_quiet_on_one_that_beats_the_mean(tmp_path):
    rng = np.random.default_rng(0)
    anatomy = rng.uniform(0.2, 1.0, (8, 8, 4))
    volumes = (anatomy + 0.02 * rng.standard_normal((5, 8, 8, 4))).astype(np.float32)
    masks = [np.ones((8, 8, 4), bool)] * 2
    constant = reconstruction_check(_Constant(), volumes, [0, 1, 2], [3, 4], masks)
    assert constant["beats_mean_image"] is False and constant["model_mse"] > constant["mean_image_mse"]
    good = reconstruction_check(_NearIdentity(), volumes, [0, 1, 2], [3, 4], masks)
    assert good["beats_mean_image"] is True and good["model_mse"] < good["nearest_training_mse"]
    assert (
        reconstruction_check(_Constant(), volumes, [0, 1, 2], [3, 4], masks, kind="normative")["beats_mean_image"]
        is None
    )  # a baseline is not accused of learning nothing
    for name, check in (("bad", constant), ("good", good)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps({"reconstruction_check": check}))
    assert "learned nothing" in banner(tmp_path / "bad") and banner(tmp_path / "good") is None
    assert banner(tmp_path / "missing") is None


def test_train_warns_and_calibrate_carries_the_banner_when_the_model_learned_nothing(tmp_path, capsys):
    data = write_cases(tmp_path / "data", 5)
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(run), "--epochs", "1", "--batch-size", "2", *TINY_CLI]
    assert main([*args, "--steps-per-epoch", "1"]) == 0  # one step from random weights: far from the mean image
    check = json.loads((run / "summary.json").read_text())["reconstruction_check"]
    assert check["beats_mean_image"] is False and check["val_cases"] == 1
    assert "learned nothing" in capsys.readouterr().err
    validation = [str(run / p) for p in json.loads((run / "split.json").read_text())["val"]]  # relative to the run
    assert main(["calibrate", "--model", str(run), "--healthy", *validation, "--device", "cpu"]) == 0
    assert "learned nothing" in capsys.readouterr().err


def test_calibrating_on_training_scans_is_refused_unless_allowed(tmp_path, capsys):
    data = write_cases(tmp_path / "data", 4)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--method", "normative", "--quiet"]) == 0
    trained = [str(run / p) for p in json.loads((run / "split.json").read_text())["train"]]
    assert main(["calibrate", "--model", str(run), "--healthy", str(data), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "training split" in err and all(name.split("/")[-1] in err for name in trained)
    copy = shutil.copytree(trained[0], tmp_path / "elsewhere" / "renamed")  # the same scan in another folder
    record = json.loads((copy / "record.json").read_text())
    for folder in trained:  # cases known by the raw scan they came from
        rec = json.loads((tmp_path / folder / "record.json").read_text())
        (tmp_path / folder / "record.json").write_text(json.dumps({**rec, "input": {"sha256": rec["name"]}}))
    (copy / "record.json").write_text(json.dumps({**record, "input": {"sha256": record["name"]}}))
    assert main(["calibrate", "--model", str(run), "--healthy", str(copy), "--device", "cpu"]) == 1
    assert "renamed" in capsys.readouterr().err
    args = ["calibrate", "--model", str(run), "--healthy", str(data), "--allow-training-scans", "--device", "cpu"]
    assert main(args) == 0


def _restamp(folder, **record):
    path = folder / "record.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **record}))


def test_one_cohort_must_share_modality_and_crop_grid(tmp_path, capsys):
    assert modality_from_name("IXI002-Guys-0828-T2_brain.nii.gz") == "T2"
    assert modality_from_name("/x/Brats18_2013_2_1_t1ce.nii.gz") == "T1CE"
    assert modality_from_name("T1.nii.gz") == "T1" and modality_from_name("avg152T1.nii.gz") is None
    data = write_cases(tmp_path / "data", 4)
    _restamp(data / "case0", input={"path": "/raw/IXI100-HH-1-T1.nii.gz"})
    _restamp(data / "case1", input={"path": "/raw/IXI101-HH-1-T2.nii.gz"})
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--method", "normative", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "modality" in err and "case0" in err and "case1" in err
    assert not run.exists()  # refused before any work
    _restamp(data / "case1", input={"path": "/raw/IXI101-HH-1-T1.nii.gz"})
    _restamp(data / "case2", grid={"name": "paper-2mm", "shape": [80, 96, 48]})
    _restamp(data / "case3", grid={"name": "paper", "shape": [160, 192, 96]})
    with pytest.raises(BrainuadError, match=r"crop grid.*case3.*case2"):
        check_one_cohort([data / f"case{i}" for i in range(4)])


def test_normative_model_fits_the_cohort_and_scores_z(tmp_path):
    data = write_cases(tmp_path / "data", 5)
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(run), "--method", "normative", "--normative-score", "z"]
    assert main([*args, "--quiet"]) == 0
    from brainuad.train.checkpoints import load_model

    model, config = load_model(run)
    assert config.model.kind == "normative" and config.model.input_shape == SHAPE
    train_ids = [run / p for p in json.loads((run / "split.json").read_text())["train"]]
    from brainuad.io.volumes import load_volume

    cohort = np.stack([load_volume(f"{p}/image.nii.gz").array for p in train_ids])
    x = torch.zeros(1, 1, *SHAPE)
    assert np.allclose(model(x)[0, 0].numpy(), np.median(cohort, axis=0), atol=2e-3)  # the cache is float16
    assert model.residual_scale().min() >= config.model.options.normative_floor
    check = json.loads((run / "summary.json").read_text())["reconstruction_check"]
    assert check["beats_mean_image"] is None and check["model_mse"] > 0
