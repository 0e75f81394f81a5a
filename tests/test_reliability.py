"""Interruptions, concurrency, unsafe names, no network, and a fuzz of the NIfTI header space."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brainuad.cli import main
from brainuad.errors import BrainuadError, OutputError
from brainuad.io.volumes import atomic_folder, load_volume
from brainuad.preprocess.pipeline import case_names, is_case_folder, load_case
from tiny import TINY_CLI, write_cases

BRAINUAD = [sys.executable, "-m", "brainuad"]


def _wait_for(condition, timeout: float = 180.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process ended early (exit {process.returncode}): {process.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def test_kill_9_during_training_then_resume(tmp_path):
    data = write_cases(tmp_path / "data", 4)
    run = tmp_path / "run"
    args = [*BRAINUAD, "train", "--data", str(data), "--out", str(run), "--epochs", "500", "--batch-size", "2"]
    args += ["--checkpoint-minutes", "0"]  # a checkpoint after every epoch (the default waits 10 minutes)
    process = subprocess.Popen([*args, *TINY_CLI], stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (run / "state.json").is_file(), process=process)
        time.sleep(0.3)  # somewhere inside a later epoch, or inside a checkpoint write
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    state = json.loads((run / "state.json").read_text())
    load_volume  # noqa: B018 (keep the import used when this test is run alone)
    from safetensors.torch import load_file

    assert load_file(str(run / "last.safetensors"))  # the latest checkpoint is whole, never half-written
    target = state["epoch"] + 1
    resume = ["train", "--data", str(data), "--out", str(run), "--epochs", str(target), "--batch-size", "2"]
    assert main([*resume, *TINY_CLI, "--resume"]) == 0
    assert json.loads((run / "state.json").read_text())["epoch"] == target


def test_kill_9_during_preprocess_batch_then_rerun(skull_stripped_scan, tmp_path, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    for i in range(3):
        shutil.copy(skull_stripped_scan, scans / f"scan{i}.nii.gz")
    out = tmp_path / "out"
    args = ["preprocess", str(scans), "--out", str(out), "--preset", "paper-2mm", "--quiet"]
    process = subprocess.Popen([*BRAINUAD, *args], stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: out.is_dir() and any(is_case_folder(p) for p in out.iterdir()), process=process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    finished_before = {p.name for p in out.iterdir() if is_case_folder(p)}
    assert 1 <= len(finished_before) < 3
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"{len(finished_before)} already finished" in printed
    complete = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert complete == [f"scan{i}" for i in range(3)] and all(is_case_folder(out / n) for n in complete)


def test_two_processes_writing_the_same_case(skull_stripped_scan, tmp_path):
    out = tmp_path / "out"
    args = [*BRAINUAD, "preprocess", str(skull_stripped_scan), "--out", str(out), "--preset", "paper-2mm"]
    processes = [subprocess.Popen([*args, "--force", "--quiet"], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    codes = [p.wait(timeout=300) for p in processes]
    assert codes == [0, 0], [p.stderr.read() for p in processes]
    case = load_case(out / "sub-01_T2w")  # one complete case, whichever process finished last
    assert case.image.shape == (80, 96, 48)
    assert [p.name for p in out.iterdir()] == ["sub-01_T2w"]


def test_names_cannot_escape_the_output_folder(tmp_path):
    names = case_names([tmp_path / "..nii.gz", tmp_path / "a b" / "x;rm -rf.nii.gz", tmp_path / ".hidden.nii"])
    for name in names.values():
        assert "/" not in name and not name.startswith(".") and name not in ("", "..")
    for bad in ("..", ".hidden", "a;b"):
        with pytest.raises(OutputError, match="unsafe"), atomic_folder(tmp_path / "out" / bad):
            pass
    assert not (tmp_path / "out" / "x").exists()


def test_no_network_at_run_time(skull_stripped_scan, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("brainuad opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    prep, run = tmp_path / "prep", tmp_path / "run"
    assert main(["preprocess", str(skull_stripped_scan), "--out", str(prep), "--preset", "paper-2mm", "--quiet"]) == 0
    assert main(["train", "--data", str(prep), "--out", str(run), "--epochs", "1", "--batch-size", "1", *TINY_CLI]) == 0
    args = [
        "detect",
        str(skull_stripped_scan),
        "--model",
        str(run),
        "--out",
        str(tmp_path / "det"),
        "--threshold",
        "0.1",
    ]
    assert main([*args, "--device", "cpu", "--quiet"]) == 0


_affine_values = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False) | st.sampled_from(
    [0.0, np.nan, np.inf, 1e12]
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.lists(st.integers(1, 12), min_size=1, max_size=5),
    dtype=st.sampled_from([np.uint8, np.int16, np.float32, np.float64]),
    affine=st.lists(_affine_values, min_size=12, max_size=12),
    fill=st.sampled_from(["random", "zeros", "nan", "constant", "spike"]),
)
def test_fuzz_nifti_header_space(tmp_path_factory, shape, dtype, affine, fill):
    """Any NIfTI nibabel can write either preprocesses or fails with a documented BrainuadError."""
    from brainuad.config import PreprocessConfig
    from brainuad.preprocess.pipeline import preprocess_file

    rng = np.random.default_rng(len(shape))
    data = {
        "random": lambda: rng.random(shape) * 100,
        "zeros": lambda: np.zeros(shape),
        "nan": lambda: np.full(shape, np.nan),
        "constant": lambda: np.full(shape, 5.0),
        "spike": lambda: np.pad(np.ones([1] * len(shape)) * 1e4, [(0, s - 1) for s in shape]),
    }[fill]()
    matrix = np.eye(4)
    matrix[:3, :] = np.asarray(affine).reshape(3, 4)
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "fuzz.nii.gz"
    try:
        image = nib.Nifti1Image(np.asarray(data).astype(dtype) if fill != "nan" or dtype in (np.float32, np.float64)
                                else np.zeros(shape, dtype), matrix)  # fmt: skip
        nib.save(image, str(path))
    except Exception:
        return  # nibabel itself cannot write this header: nothing to feed brainuad
    before = path.read_bytes()
    try:
        preprocess_file(path, folder / "out", PreprocessConfig(preset="paper-2mm", skull_strip="none"))
    except BrainuadError as exc:
        assert str(path) in str(exc) or "in-memory" in str(exc)
        assert (
            not [p for p in (folder / "out").glob("*") if not p.name.startswith(".")]
            if (folder / "out").exists()
            else True
        )
    assert path.read_bytes() == before
    assert Path(path).exists() and os.access(path, os.R_OK)
