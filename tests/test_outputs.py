"""What users meet first: output permissions colleagues can read, and a CLI that answers bad paths and --help at
once (before torch is imported)."""

import os
import stat
import subprocess
import sys

import pytest

from brainuad.io.volumes import atomic_folder, current_umask, write_json
from conftest import REPO_ROOT


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_atomic_outputs_respect_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        assert current_umask() == umask
        write_json(tmp_path / "summary.json", {"a": 1})
        with atomic_folder(tmp_path / "case") as staging:
            write_json(staging / "record.json", {})
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "summary.json") == 0o666 & ~umask  # 0644 under the usual 022
    assert _mode(tmp_path / "case") == 0o777 & ~umask  # 0755
    assert _mode(tmp_path / "case" / "record.json") == 0o666 & ~umask


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter and report whether it imported torch."""
    code = (
        "import sys\nfrom brainuad.cli import main\ntry:\n    code = main(sys.argv[1:])\nexcept SystemExit as e:\n"
        "    code = e.code\nprint('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\nsys.exit(code)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "args",
    [
        ["detect", "missing.nii.gz", "--model", "runs/ae", "--out", "findings"],
        ["preprocess", "missing.nii.gz", "--out", "prep"],
        ["calibrate", "--model", "runs/missing"],
        ["evaluate", "--model", "runs/missing", "--cases", "labelled", "--out", "evaluation"],
        ["bids", "missing", "out", "participant"],
    ],
)
def test_missing_inputs_are_reported_before_torch_is_imported(tmp_path, args):
    result = _cli(*args, cwd=tmp_path)
    assert result.returncode == 1
    assert "missing" in result.stderr and "not found" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout.strip().endswith("NO-TORCH")  # the check ran before the seconds-long heavy imports


@pytest.mark.parametrize(
    "verb", ["", "preprocess", "train", "calibrate", "detect", "evaluate", "ablate", "demo", "bids"]
)
def test_help_does_not_import_torch(tmp_path, verb):
    result = _cli(*([verb] if verb else []), "--help", cwd=tmp_path)
    assert result.returncode == 0 and "usage: brainuad" in result.stdout
    if verb in ("train", "ablate"):
        # Their help lists every registered model's own settings (--kl-weight, --noise-std, …): the models, and so
        # torch, are imported to find them. Every other verb's help stays instant.
        assert "--kl-weight" in result.stdout and "--normative-score" in result.stdout
    else:
        assert result.stdout.strip().endswith("NO-TORCH")
