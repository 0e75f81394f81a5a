"""Every scan-reading verb (preprocess, detect, evaluate) on every kind of bad input: it works (perhaps with a
warning) or fails naming the file and the problem — exit code 1, no partial output, the input untouched — and in a
batch the other scans still complete."""

from __future__ import annotations

import errno
import hashlib
import re
import shutil
from pathlib import Path

import pytest

from bad_inputs.corpus import KINDS, OUTCOMES, BadKind
from brainuad.cli import main

IMAGE_KINDS = [k for k in KINDS if k.target == "image"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check(kind: BadKind, verb: str, code: int, err: str, bad_file: Path, out: Path, before: str) -> None:
    assert _digest(bad_file) == before, "the input file was modified"
    assert not list(out.parent.glob(".*partial*")) and not list(out.glob(".*partial*")) if out.exists() else True
    if kind.expect == "ok":
        assert code == 0, err
        OUTCOMES[(kind.name, verb)] = "works"
        return
    assert code == 1, f"expected a failure, got exit {code}"
    assert str(bad_file) in err, f"the message does not name the file: {err}"
    assert re.search(kind.expect, err), f"unexpected message: {err}"
    OUTCOMES[(kind.name, verb)] = "clear error"


@pytest.mark.parametrize("kind", IMAGE_KINDS, ids=lambda k: k.name)
def test_preprocess(world, kind, capsys):
    image = world["cases"][kind.name][0]
    out = world["root"] / "out-preprocess" / kind.name
    before = _digest(image)
    code = main(["preprocess", str(image), "--out", str(out), "--preset", "paper-2mm", "--quiet"])
    _check(kind, "preprocess", code, capsys.readouterr().err, image, out, before)
    finished = [p for p in out.iterdir() if p.is_dir()] if out.exists() else []
    assert bool(finished) == (kind.expect == "ok")  # no output at all for a failed scan
    assert out.exists() == (kind.expect == "ok"), "a refused run left the --out folder it created"


@pytest.mark.parametrize("kind", IMAGE_KINDS, ids=lambda k: k.name)
def test_detect(world, kind, capsys):
    image = world["cases"][kind.name][0]
    out = world["root"] / "out-detect" / kind.name
    before = _digest(image)
    code = main(["detect", str(image), "--model", str(world["run"]), "--out", str(out), "--device", "cpu", "--quiet"])
    _check(kind, "detect", code, capsys.readouterr().err, image, out, before)
    finished = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")] if out.exists() else []
    assert bool(finished) == (kind.expect == "ok")
    assert out.exists() == (kind.expect == "ok"), "a refused run left the --out folder it created"
    if kind.name == "thick_slices_7mm_18":
        summary = (finished[0] / "summary.json").read_text()
        assert "thick slices" in summary  # works, with the degradation recorded


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_evaluate(world, kind, capsys):
    image, label = world["cases"][kind.name]
    bad_file = image if kind.target == "image" else label
    out = world["root"] / "out-evaluate" / kind.name
    before = _digest(bad_file)
    args = ["evaluate", "--model", str(world["run"]), "--cases", str(image.parent), "--out", str(out)]
    code = main([*args, "--device", "cpu", "--quiet"])
    _check(kind, "evaluate", code, capsys.readouterr().err, bad_file, out, before)
    assert (out / "summary.json").is_file() == (kind.expect == "ok")


def test_batch_goes_on_past_bad_scans(world, capsys):
    folder = world["root"] / "batch"
    folder.mkdir()
    for kind in IMAGE_KINDS:
        if kind.expect != "ok":
            shutil.copy(world["cases"][kind.name][0], folder / f"{kind.name}.nii.gz")
    shutil.copy(world["good"], folder / "good_scan.nii.gz")
    out = world["root"] / "batch-out"
    assert main(["preprocess", str(folder), "--out", str(out), "--preset", "paper-2mm", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert (out / "good_scan" / "record.json").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["good_scan"]
    assert err.count("failed:") == sum(k.expect != "ok" for k in IMAGE_KINDS)
    OUTCOMES[("batch_with_bad_scans", "preprocess")] = "others done"


def test_missing_file(world, capsys):
    missing = world["root"] / "nope" / "missing.nii.gz"
    for verb, args in (
        ("preprocess", ["preprocess", str(missing), "--out", str(world["root"] / "m1")]),
        ("detect", ["detect", str(missing), "--model", str(world["run"]), "--out", str(world["root"] / "m2")]),
    ):
        assert main([*args, "--quiet"]) == 1
        assert str(missing) in capsys.readouterr().err
        OUTCOMES[("missing_file", verb)] = "clear error"


def test_unreadable_file(world, capsys, monkeypatch):
    # Tests run as root, which reads any file: simulate the permission check failing for this one file.
    import os

    image = world["cases"]["huge_outliers"][0]
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == image else real_access(p, mode))
    assert main(["preprocess", str(image), "--out", str(world["root"] / "perm"), "--quiet"]) == 1
    assert "permission denied" in capsys.readouterr().err
    OUTCOMES[("unreadable_permissions", "preprocess")] = "clear error"


def test_output_folder_not_writable(world, capsys):
    blocker = world["root"] / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "out"
    assert main(["preprocess", str(world["good"]), "--out", str(out), "--preset", "paper-2mm", "--quiet"]) == 1
    assert "a_file" in capsys.readouterr().err
    args = ["detect", str(world["good"]), "--model", str(world["run"]), "--out", str(out), "--device", "cpu"]
    assert main([*args, "--quiet"]) == 1
    assert "a_file" in capsys.readouterr().err
    OUTCOMES[("output_not_writable", "preprocess")] = OUTCOMES[("output_not_writable", "detect")] = "clear error"


def test_disk_full_leaves_nothing(world, capsys, monkeypatch):
    import brainuad.io.volumes

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(brainuad.io.volumes.nib, "save", full)
    out = world["root"] / "full"
    assert main(["preprocess", str(world["good"]), "--out", str(out), "--preset", "paper-2mm", "--quiet"]) == 1
    assert "disk full" in capsys.readouterr().err
    assert not [p for p in out.iterdir()] if out.exists() else True  # no case folder, no staging folder
    OUTCOMES[("disk_full", "preprocess")] = "clear error"
