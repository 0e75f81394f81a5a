"""tensorboard is an optional extra (brainuad[tensorboard]): without it training writes no events and says so once."""

import importlib.util
import logging
import sys

import pytest

from brainuad.train import epochs


@pytest.fixture
def fresh_import():
    epochs._summary_writer_class.cache_clear()
    yield
    epochs._summary_writer_class.cache_clear()


def test_without_tensorboard_no_events_and_one_message(fresh_import, monkeypatch, caplog, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` of it raises ImportError
    with caplog.at_level(logging.INFO, logger="brainuad"):
        assert epochs.tensorboard_writer(tmp_path / "a") is None
        assert epochs.tensorboard_writer(tmp_path / "b") is None
    said = [r for r in caplog.records if "tensorboard is not installed" in r.getMessage()]
    assert len(said) == 1 and said[0].name == "brainuad.train.epochs"
    assert "brainuad[tensorboard]" in said[0].getMessage()
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_with_tensorboard_events_are_written(fresh_import, tmp_path):
    if importlib.util.find_spec("tensorboard") is None:
        pytest.skip("tensorboard not installed (the optional extra)")
    writer = epochs.tensorboard_writer(tmp_path / "tensorboard")
    writer.add_scalars("loss", {"train": 1.0}, 1)
    writer.close()
    assert any((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))


def test_tensorboard_is_an_extra_not_a_dependency():
    tomllib = pytest.importorskip("tomllib")
    from conftest import REPO_ROOT

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert not any(r.lower().startswith("tensorboard") for r in project["dependencies"])
    assert any(r.startswith("tensorboard") for r in project["optional-dependencies"]["tensorboard"])


def test_cli_training_without_tensorboard(fresh_import, monkeypatch, tmp_path, capsys):
    from brainuad.cli import main
    from tiny import TINY_CLI, write_cases

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    data = write_cases(tmp_path / "data", 3)
    args = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "2"]
    assert main(["-v", *args, *TINY_CLI]) == 0
    err = capsys.readouterr().err
    assert err.count("brainuad train: tensorboard is not installed") == 1
    assert "brainuad train: debug: gradient loop: 2 training scans" in err  # -v: the library's debug lines
    assert (tmp_path / "run" / "log.csv").is_file() and not (tmp_path / "run" / "tensorboard").exists()
