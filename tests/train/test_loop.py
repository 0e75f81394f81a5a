import json
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from brainuad.cli import main
from brainuad.config import ModelConfig, replace
from brainuad.errors import BrainuadError, InputError
from brainuad.models import build_model
from brainuad.train.checkpoints import (
    load_config,
    load_model,
    load_optimizer,
    load_weights,
    save_optimizer,
    save_weights,
)
from brainuad.train.loop import train
from brainuad.train.runfolder import make_split
from tiny import SHAPE, TINY_CLI, TINY_MODEL, tiny_config, write_cases


def test_split_is_seeded_and_disjoint(tmp_path):
    cases = [tmp_path / f"c{i}" for i in range(10)]
    a, b = make_split(cases, 0.2, seed=1), make_split(cases, 0.2, seed=1)
    assert a == b and len(a["val"]) == 2 and not set(a["train"]) & set(a["val"])
    one = make_split(cases[:1], 0.2, seed=0)
    assert one["train"] == one["val"] and one["note"]


def test_train_writes_a_self_describing_run(tmp_path):
    data = write_cases(tmp_path / "data", 5)
    result = train([data], tmp_path / "run", tiny_config(), progress=False)
    run = tmp_path / "run"
    for name in (
        "config.json",
        "split.json",
        "model.safetensors",
        "last.safetensors",
        "last_optimizer.safetensors",
        "state.json",
        "log.csv",
        "loss_curve.png",
        "provenance.json",
        "summary.json",
    ):
        assert (run / name).is_file(), name
    assert result.epochs_done == 2 and len(result.history) == 2
    config = load_config(run / "config.json")
    assert config.model.input_shape == SHAPE  # taken from the data
    assert len(json.loads((run / "split.json").read_text())["val"]) == 1
    model, _ = load_model(run)
    assert not model.training  # inference always in eval mode
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_done"] == 2 and summary["parameters"] > 0
    with pytest.raises(BrainuadError, match="--resume"):
        train([data], run, tiny_config(), progress=False)


def test_resume_is_bit_identical(tmp_path):
    data = write_cases(tmp_path / "data", 4)
    config = tiny_config(epochs=3, augment="on")
    train([data], tmp_path / "straight", config, progress=False)
    train([data], tmp_path / "resumed", tiny_config(epochs=1, augment="on"), progress=False)
    train([data], tmp_path / "resumed", config, resume=True, progress=False)
    a = load_file(str(tmp_path / "straight" / "last.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "last.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log = (tmp_path / "resumed" / "log.csv").read_text().strip().splitlines()
    assert len(log) == 4  # header + 3 epochs


def test_weights_round_trip_and_mismatch(tmp_path):
    model = build_model(TINY_MODEL.__class__(**{**TINY_MODEL.__dict__, "input_shape": SHAPE}))
    path = save_weights(model, tmp_path / "w.safetensors")
    other = build_model(ModelConfig(**{**TINY_MODEL.__dict__, "input_shape": SHAPE}))
    load_weights(other, path)
    for (ka, va), (kb, vb) in zip(model.state_dict().items(), other.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    wrong = build_model(ModelConfig(**{**TINY_MODEL.__dict__, "input_shape": SHAPE, "latent": 8}))
    with pytest.raises(InputError, match="do not match"):
        load_weights(wrong, path)
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="safetensors"):
        load_weights(other, tmp_path / "junk.safetensors")


def _fused_adam_on_cpu() -> bool:
    try:
        torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], fused=True)
    except RuntimeError:  # PyTorch before 2.4: the fused kernel is CUDA-only
        return False
    return True


@pytest.mark.skipif(not _fused_adam_on_cpu(), reason="fused Adam on the CPU needs PyTorch 2.4 or later")
@pytest.mark.parametrize(("saved_fused", "resumed_fused"), [(True, None), (None, True), (True, True)])
def test_optimizer_resumes_with_its_own_implementation(tmp_path, saved_fused, resumed_fused):
    # A run checkpointed on CUDA (fused Adam, channels-last weights) and resumed elsewhere, or the reverse: the state
    # carries over in the parameters' own layout, the implementation flag is the resuming optimiser's, and the next
    # update matches an uninterrupted one's.
    def setup(fused):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
        net(torch.zeros(1, 3, 5, 5, 5))
        net = net.to(memory_format=torch.channels_last_3d)  # as train() does on CUDA, before the optimiser
        return net, torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-5, fused=fused)

    def update(net, optimizer, seed):
        torch.manual_seed(seed)
        optimizer.zero_grad()
        net(torch.randn(2, 3, 5, 5, 5)).square().mean().backward()
        optimizer.step()

    reference, reference_opt = setup(saved_fused)
    for seed in range(3):
        update(reference, reference_opt, seed)
    first, first_opt = setup(saved_fused)
    for seed in range(2):
        update(first, first_opt, seed)
    path = save_optimizer(first_opt, tmp_path / "opt.safetensors")
    second, second_opt = setup(resumed_fused)
    second.load_state_dict(first.state_dict())
    load_optimizer(second_opt, path)
    assert second_opt.param_groups[0]["fused"] == resumed_fused
    weight = second[0].weight
    assert second_opt.state[weight]["exp_avg"].stride() == weight.stride()  # channels-last, as the weight
    update(second, second_opt, 2)
    for a, b in zip(reference.parameters(), second.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_config_mismatching_weights_is_refused(tmp_path):
    data = write_cases(tmp_path / "data", 3)
    train([data], tmp_path / "run", tiny_config(epochs=1), progress=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["model"]["latent"] = 32
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="do not match"):
        load_model(tmp_path / "run")
    config["model"]["surprise"] = 1
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="unknown key"):
        load_model(tmp_path / "run")


def test_training_input_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no preprocessed cases"):
        train([tmp_path / "empty"], tmp_path / "run", tiny_config(), progress=False)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "scan.nii.gz").write_bytes(b"x")
    with pytest.raises(InputError, match="brainuad preprocess"):
        train([raw], tmp_path / "run", tiny_config(), progress=False)
    mixed = tmp_path / "mixed"
    write_cases(mixed, 2)
    write_cases(tmp_path / "other", 1, shape=(32, 32, 32))
    (tmp_path / "other" / "case0").rename(mixed / "odd")
    with pytest.raises(InputError, match="same preset"):
        train([mixed], tmp_path / "run2", tiny_config(), progress=False)


def test_cli_train_and_resume(tmp_path, capsys):
    data = write_cases(tmp_path / "data", 3)
    args = [
        "train",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "run"),
        "--epochs",
        "1",
        "--batch-size",
        "2",
        *TINY_CLI,
    ]
    assert main(args) == 0
    assert "best validation MSE" in capsys.readouterr().out
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    assert json.loads((tmp_path / "run" / "state.json").read_text())["epoch"] == 2
    assert main([*args[:5], "--latent", "0"]) == 2


@pytest.mark.parametrize("kind", ["vae", "dae"])
def test_baseline_models_train_and_resume_bit_identically(tmp_path, kind):
    # Their randomness (VAE sampling, DAE noise) is seeded per step, so --resume replays it exactly.
    data = write_cases(tmp_path / "data", 3)
    config = replace(tiny_config(epochs=2, batch_size=1), model=replace(TINY_MODEL, kind=kind))
    train([data], tmp_path / "full", config, progress=False)
    train([data], tmp_path / "part", replace(config, training=replace(config.training, epochs=1)), progress=False)
    train([data], tmp_path / "part", config, resume=True, progress=False)
    full, part = load_file(str(tmp_path / "full/last.safetensors")), load_file(str(tmp_path / "part/last.safetensors"))
    assert all(torch.equal(full[k], part[k]) for k in full)
    _model, loaded = load_model(tmp_path / "full")
    assert loaded.model.kind == kind and np.isfinite(
        json.loads((tmp_path / "full/summary.json").read_text())["best_val_loss"]
    )


def test_intensity_baseline_needs_no_training(tmp_path):
    data = write_cases(tmp_path / "data", 2)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--method", "intensity", "--quiet"]) == 0
    model, config = load_model(tmp_path / "run")
    assert config.model.kind == "intensity" and not list(model.parameters())
    assert (tmp_path / "run/split.json").is_file() and not (tmp_path / "run/log.csv").exists()


def test_fanogan_trains_in_two_stages(tmp_path):
    data = write_cases(tmp_path / "data", 3)
    config = replace(tiny_config(epochs=2, batch_size=1), model=replace(TINY_MODEL, kind="fanogan"))
    result = train([data], tmp_path / "run", config, progress=False)
    assert result.epochs_done == 4 and np.isfinite(result.best_val_loss) and result.best_epoch > 2
    model, loaded = load_model(tmp_path / "run")
    assert loaded.model.kind == "fanogan"
    x = torch.rand(1, 1, *SHAPE)
    with torch.no_grad():
        assert model(x).shape == x.shape
    with pytest.raises(BrainuadError, match="cannot be resumed"):
        train([data], tmp_path / "run", config, resume=True, progress=False)


def test_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    # Validation every 2 epochs; the run dies while writing epoch 3's checkpoint: resuming reruns epoch 3 from the
    # epoch-2 checkpoint, drops the stale log row, and ends bit-identical to an uninterrupted run.
    from brainuad.train.checkpoints import Checkpointer

    data = write_cases(tmp_path / "data", 4)
    config = tiny_config(epochs=4, augment="on", val_every=2, checkpoint_minutes=0)
    train([data], tmp_path / "straight", config, progress=False)
    original = Checkpointer.maybe_save

    def dies_at_epoch_3(self, state, force=False):
        if state["epoch"] == 3:
            raise KeyboardInterrupt
        return original(self, state, force)

    monkeypatch.setattr(Checkpointer, "maybe_save", dies_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train([data], tmp_path / "resumed", config, progress=False)
    assert json.loads((tmp_path / "resumed/state.json").read_text())["epoch"] == 2
    monkeypatch.setattr(Checkpointer, "maybe_save", original)
    train([data], tmp_path / "resumed", config, resume=True, progress=False)
    for name in ("last.safetensors", "model.safetensors"):
        a, b = load_file(str(tmp_path / "straight" / name)), load_file(str(tmp_path / "resumed" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    rows = (tmp_path / "resumed/log.csv").read_text().strip().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3, 4]
    assert [r.split(",")[2] == "nan" for r in rows] == [True, False, True, False]  # validated on 2 and 4 only


def test_checkpoints_wait_for_their_interval_and_compile_falls_back(tmp_path, monkeypatch):
    data = write_cases(tmp_path / "data", 3)

    def broken_compile(module, **kwargs):
        def fails(*args, **kw):
            raise RuntimeError("no compiler here")

        return fails

    monkeypatch.setattr(torch, "compile", broken_compile)
    config = tiny_config(epochs=2, compile=True, checkpoint_minutes=60)
    written = []
    from brainuad.train.checkpoints import Checkpointer

    original = Checkpointer.maybe_save

    def records(self, state, force=False):
        written.append(original(self, state, force))

    monkeypatch.setattr(Checkpointer, "maybe_save", records)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        train([data], tmp_path / "compiled", config, progress=False)
    assert written == [False, True]  # epoch 1: within the hour; epoch 2: the end
    train([data], tmp_path / "eager", tiny_config(epochs=2, compile=False), progress=False)
    a, b = load_file(str(tmp_path / "compiled/last.safetensors")), load_file(str(tmp_path / "eager/last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_long_run_says_how_long_after_its_first_epoch():
    from brainuad.train.runfolder import warn_if_long as _warn_if_long

    with pytest.warns(
        RuntimeWarning, match=r"^runs/x: epoch 1 took 300 s: the 199 epochs left take about 16\.6 h on cpu; .*quick"
    ):
        _warn_if_long("runs/x", 1, 199, 300.0, torch.device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_if_long("runs/x", 1, 10, 300.0, torch.device("cpu"))  # under an hour: nothing to say
