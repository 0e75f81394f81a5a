"""The recorded brainuad commit comes from brainuad's own checkout, never from a repository it happens to lie in."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from brainuad.io.provenance import git_hash, is_brainuad_source_tree, source_commit
from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "src" / "brainuad"
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _repo_with_package(root, project_name: str, where: str) -> str:
    """A git repository at ``root`` (its pyproject naming ``project_name``) holding a copy of the package under
    ``where``, committed; returns the commit."""
    package = root / where / "brainuad"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__", "builtin"))
    (root / "pyproject.toml").write_text(f'[project]\nname = "{project_name}"\nversion = "1.0"\n')
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "theirs"]):
        subprocess.run([*git, *args], cwd=root, check=True, capture_output=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()


def test_a_package_inside_a_users_own_repository_does_not_report_their_commit(tmp_path, monkeypatch):
    # brainuad installed into a .venv inside the user's project: their work tree holds site-packages/brainuad.
    theirs = _repo_with_package(tmp_path, "their-study", ".venv/lib/python3.11/site-packages")
    package = tmp_path / ".venv/lib/python3.11/site-packages/brainuad"
    assert source_commit(package) is None
    # Nor through the caller's environment (inside a git hook GIT_DIR points at their repository).
    monkeypatch.setenv("GIT_DIR", str(tmp_path / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(tmp_path))
    assert source_commit(package) is None
    # The running code, imported from that copy, answers the same (a fresh process: git_hash() is cached).
    code = "from brainuad.io.provenance import git_hash; print(git_hash())"
    env = {"PYTHONPATH": str(package.parent), "PATH": os.environ["PATH"]}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None" and theirs not in out.stdout


def test_a_checkout_of_brainuad_reports_its_commit(tmp_path):
    # The same package in a tree laid out as brainuad's own (pyproject names brainuad, src/brainuad): trusted.
    commit = _repo_with_package(tmp_path, "brainuad", "src")
    assert source_commit(tmp_path / "src" / "brainuad") == commit
    (tmp_path / "src" / "brainuad" / "config.py").write_text("# edited\n")
    assert source_commit(tmp_path / "src" / "brainuad") == commit + "-dirty"
    # A project named brainuad whose src/brainuad is not the package asked about is not its checkout.
    assert not is_brainuad_source_tree(tmp_path, PACKAGE)


def test_this_checkout_is_recognised():
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not run from a git checkout")
    assert is_brainuad_source_tree(REPO_ROOT, PACKAGE)
    git_hash.cache_clear()
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", git_hash() or "")  # (HEAD itself may move: others commit here)
