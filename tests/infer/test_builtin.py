"""Models shipped with the package (``--model builtin:NAME``): offline, read-only, validated, listed."""

import shutil
import socket
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from brainuad.cli import main
from brainuad.errors import BrainuadError, InputError
from brainuad.io import shipped
from brainuad.train.checkpoints import load_model

NAMES = ("t1", "t2")


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def read_only_install(tmp_path, monkeypatch):
    """The shipped folders copied to a read-only place that stands in for the install location."""
    root = tmp_path / "site-packages" / "brainuad" / "builtin"
    shutil.copytree(shipped.builtin_root(), root, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    for path in sorted(root.rglob("*"), reverse=True):
        path.chmod(stat.S_IRUSR | stat.S_IRGRP | (stat.S_IXUSR | stat.S_IXGRP if path.is_dir() else 0))
    root.chmod(stat.S_IRUSR | stat.S_IXUSR)
    monkeypatch.setattr(shipped, "builtin_root", lambda: root)
    yield root
    for path in [root, *root.rglob("*")]:
        path.chmod(stat.S_IRWXU)


def test_both_models_are_shipped_with_their_files():
    assert set(NAMES) <= set(shipped.builtin_names())
    for name in NAMES:
        folder = shipped.resolve_model_dir(f"builtin:{name}")
        assert (folder / "model.safetensors").stat().st_size <= 25 * 2**20
        tensors = load_file(str(folder / "model.safetensors")).values()
        assert all(t.dtype in (torch.float16, torch.int64) for t in tensors)


@pytest.mark.parametrize("name", NAMES)
def test_builtin_loads_offline_from_a_read_only_location(name, no_network, read_only_install, tmp_path):
    model, config = load_model(f"builtin:{name}")
    assert config.preprocessing.preset == "paper-2mm"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with torch.no_grad():
        out = model(torch.zeros(1, 1, *config.model.input_shape))
    assert torch.isfinite(out).all()
    from brainuad.evaluate.calibrate import calibrate
    from brainuad.infer.calibration import read_calibration

    assert read_calibration(f"builtin:{name}").threshold > 0
    with pytest.raises(BrainuadError, match="read-only"):
        calibrate(f"builtin:{name}", [tmp_path])


def test_unknown_builtin_and_bad_weights_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="shipped: t1, t2"):
        shipped.resolve_model_dir("builtin:flair")
    folder = tmp_path / "model"
    shutil.copytree(shipped.resolve_model_dir("builtin:t2"), folder)
    state = load_file(str(folder / "model.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(InputError, match="NaN"):
        load_model(folder)
    state[key] = state[key].double()
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(InputError, match="dtype"):
        load_model(folder)


def test_models_verb_lists_the_cards(capsys):
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "builtin:t1" in listing and "builtin:t2" in listing
    assert main(["models", "t2"]) == 0
    card = capsys.readouterr().out
    assert "Training data" in card and "Known limits" in card
    assert main(["models", "flair"]) == 1
