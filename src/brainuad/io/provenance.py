"""What produced an output: package versions, git hash, platform — saved in every record and run folder."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

TRACKED_PACKAGES = (
    "brainuad",
    "torch",
    "numpy",
    "scipy",
    "nibabel",
    "antspyx",
    "nilearn",
    "monai",
    "deepbet",
    "scikit-learn",
    "safetensors",
)


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Installed versions of the packages whose behaviour shapes brainuad's results."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@functools.lru_cache(maxsize=1)
def git_hash() -> str | None:
    """Commit of the brainuad code that is running (``-dirty`` when its checkout has uncommitted changes), or ``None``.

    Where it comes from, in order (see :func:`source_commit`):

    1. A git checkout **of brainuad itself**: ``git rev-parse HEAD`` is trusted only when the repository's top level
       is brainuad's source tree — its ``pyproject.toml`` names the project ``brainuad`` and its ``src/brainuad`` is
       this very package. That is the case for ``pip install -e .`` from a clone (and for running from ``src/``),
       where a commit frozen at install time would go stale with the next commit, so git is asked at run time.
    2. Otherwise the commit pip recorded at install time, when it installed brainuad from a git URL
       (``pip install git+https://…@REF``: PEP 610's ``direct_url.json`` holds the commit it checked out).
    3. Otherwise ``None``: a wheel (or sdist) from an index carries no commit; its version, from the installed
       package's metadata (:func:`library_versions`), identifies it.

    Why not ask git wherever the package lies, as before: installed into a user's own project (a ``.venv`` inside
    their git repository), ``site-packages/brainuad`` sits inside *their* work tree, and git answered with the
    user's commit, recorded as brainuad's. Why not setuptools-scm: it would make the version dynamic (the
    version is declared once, in ``pyproject.toml`` and ``brainuad.__version__``, and the shipped models' records
    quote it) and an editable install's version file would still go stale with each commit; the check above is
    right for both ``pip install -e .`` and a wheel, needs no build step and no dependency. ``GIT_*`` variables of
    the calling environment (``GIT_DIR``, ``GIT_WORK_TREE``, set inside git hooks) are ignored, so a caller's
    repository cannot answer either.
    """
    return source_commit(Path(__file__).resolve().parents[1])


def source_commit(package_dir: Path) -> str | None:
    """:func:`git_hash` for the brainuad package lying in ``package_dir`` (uncached; the tests move it)."""
    commit = _own_checkout_commit(Path(package_dir).resolve())
    return commit if commit is not None else _installed_commit(Path(package_dir).resolve())


def _git(args: list[str], cwd: Path) -> str | None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, env=env)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def is_brainuad_source_tree(top: Path, package_dir: Path) -> bool:
    """Whether ``top`` is brainuad's own source tree, holding the package ``package_dir`` as ``src/brainuad``."""
    try:
        if (top / "src" / "brainuad").resolve() != package_dir.resolve():
            return False
        pyproject = (top / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return False
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", pyproject, re.MULTILINE | re.DOTALL)
    return bool(project and re.search(r"""^name\s*=\s*["']brainuad["']\s*$""", project.group(1), re.MULTILINE))


def _own_checkout_commit(package_dir: Path) -> str | None:
    top = _git(["rev-parse", "--show-toplevel"], package_dir)
    if not top or not is_brainuad_source_tree(Path(top), package_dir):
        return None  # not in git, or in someone else's repository (a .venv inside the user's project)
    head = _git(["rev-parse", "HEAD"], package_dir)
    if not head:
        return None
    dirty = _git(["status", "--porcelain", "--untracked-files=no"], package_dir)
    return head + ("-dirty" if dirty else "")


def _installed_commit(package_dir: Path) -> str | None:
    """The commit pip recorded when it installed this package from a git URL (PEP 610), else ``None``."""
    try:
        dist = metadata.distribution("brainuad")
        if Path(str(dist.locate_file("brainuad/__init__.py"))).resolve() != package_dir / "__init__.py":
            return None  # the installed metadata describes another copy than the one running
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except (metadata.PackageNotFoundError, OSError, ValueError):
        return None
    commit = (direct.get("vcs_info") or {}).get("commit_id") if isinstance(direct, dict) else None
    return commit if isinstance(commit, str) and re.fullmatch(r"[0-9a-f]{7,64}", commit) else None


def provenance() -> dict:
    """Versions, git hash and platform, ready for a JSON record."""
    return {"versions": library_versions(), "git": git_hash(), "platform": platform.platform()}


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
