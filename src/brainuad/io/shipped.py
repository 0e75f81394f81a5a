"""Models shipped inside the package (``--model builtin:NAME``): where they are, what their cards say.

Each built-in model is a folder ``brainuad/builtin/<name>/`` installed with the package: ``config.json``,
``model.safetensors`` (float16, cast to float32 on load), ``calibration.json`` and ``MODEL_CARD.md``. Nothing is
downloaded: the files come with ``pip install``. :func:`resolve_model_dir` is the one place every verb turns a
``--model`` argument into a folder.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from brainuad.errors import BrainuadError, InputError

PREFIX = "builtin:"
REQUIRED_FILES = ("config.json", "model.safetensors", "calibration.json", "MODEL_CARD.md")


def builtin_root() -> Path:
    """The installed ``brainuad/builtin`` folder."""
    return Path(str(resources.files("brainuad") / "builtin"))


def builtin_names() -> list[str]:
    """Names of the shipped models (folders with every required file)."""
    root = builtin_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and all((p / f).is_file() for f in REQUIRED_FILES))


def is_builtin(spec: str | Path) -> bool:
    """Whether ``spec`` names a built-in model (``builtin:NAME``) or is the folder of one."""
    if str(spec).startswith(PREFIX):
        return True
    try:
        return Path(spec).resolve().parent == builtin_root().resolve()
    except OSError:
        return False


def resolve_model_dir(spec: str | Path) -> Path:
    """The model folder ``spec`` names: ``builtin:NAME`` → the installed folder, anything else → ``Path(spec)``.

    Raises:
        InputError: An unknown built-in name (the message lists the shipped ones).
    """
    text = str(spec)
    if not text.startswith(PREFIX):
        return Path(spec)
    name = text[len(PREFIX) :]
    names = builtin_names()
    if name not in names:
        raise InputError(text, f"no built-in model {name!r}; shipped: {', '.join(names) or 'none'}")
    return builtin_root() / name


def refuse_builtin(spec: str | Path, verb: str) -> None:
    """Refuse to write into a shipped model's folder (the install location is not ours to change)."""
    if is_builtin(spec):
        folder = resolve_model_dir(spec) if str(spec).startswith(PREFIX) else Path(spec)
        raise BrainuadError(
            f"{spec}: a built-in model is read-only, so '{verb}' will not overwrite its calibration; copy its folder "
            f"first (cp -r {folder} my-model) and {verb} the copy"
        )


def model_card(name: str) -> str:
    """The text of a shipped model's ``MODEL_CARD.md``."""
    return (resolve_model_dir(PREFIX + name) / "MODEL_CARD.md").read_text(encoding="utf-8")
