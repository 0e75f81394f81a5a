"""Every command and Python snippet in the README is checked against the code: CLI lines must parse with the real
argument parser (flags, choices, verbs), and every call of a brainuad function must bind to its real signature."""

import ast
import importlib
import inspect
import re
import shlex

import pytest

from brainuad.cli import build_parser
from conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _cli_lines() -> list[str]:
    lines = []
    for block in _blocks("bash"):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split(" #")[0].strip()
            for part in line.split("&&"):
                part = part.strip()
                match = re.search(r"(?:^|\s)(?:brainuad|-m brainuad)\s(.*)$", part)
                if part.startswith(("brainuad ", "torchrun ")) or (match and "pip " not in part.split("brainuad")[0]):
                    lines.append(match.group(1) if match else part)
                elif match:
                    lines.append(match.group(1))
    return lines


def _concrete(line: str) -> list[str]:
    """A documented command with its optional [--flag VALUE|OTHER] parts expanded to their first alternative."""
    line = re.sub(r"\[([^\[\]]*)\]", lambda m: m.group(1).split("|")[0].replace("…", "1").replace("...", ""), line)
    line = line.replace("<validation cases listed in runs/ae512/split.json>", "prep/val")
    words = [w.split("|")[0] for w in shlex.split(line)]
    return ["2" if w == "N" else w for w in words]  # a number where the README writes N


CLI_LINES = _cli_lines()


def _demo_hint_lines() -> list[str]:
    from brainuad.demo import REAL_DATA_COMMANDS

    return [line.split(" #")[0].strip()[len("brainuad ") :] for line in REAL_DATA_COMMANDS.splitlines()]


def test_readme_documents_every_verb():
    verbs = {shlex.split(line)[0] for line in CLI_LINES}
    assert {"preprocess", "train", "calibrate", "detect", "evaluate", "ablate", "demo", "download"} <= verbs


@pytest.mark.parametrize("line", CLI_LINES + _demo_hint_lines())
def test_readme_cli_line_parses(line):
    words = _concrete(line)
    words = [w for w in words if w not in ("INPUT", "...") and not w.startswith("INPUT")] or words
    if words[0] == "preprocess" and words[1].startswith("--"):
        words.insert(1, "scan.nii.gz")
    try:
        build_parser().parse_args(words)
    except SystemExit as exc:
        pytest.fail(f"README command does not parse: brainuad {' '.join(words)} (exit {exc.code})")


def _python_calls() -> list[tuple[str, str, ast.Call]]:
    calls = []
    for block in _blocks("python"):
        tree = ast.parse(block)
        imported = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("brainuad"):
                for alias in node.names:
                    imported[alias.asname or alias.name] = node.module
        calls += [
            (imported[node.func.id], node.func.id, node)
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in imported
        ]
    return calls


@pytest.mark.parametrize(("module", "name", "call"), _python_calls(), ids=lambda v: v if isinstance(v, str) else "")
def test_readme_python_call_binds_to_the_real_signature(module, name, call):
    target = getattr(importlib.import_module(module), name)
    signature = inspect.signature(target)
    try:
        signature.bind(*[None] * len(call.args), **{k.arg: None for k in call.keywords if k.arg})
    except TypeError as exc:
        pytest.fail(f"README calls {module}.{name} with arguments its signature does not take: {exc}")
