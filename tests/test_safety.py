"""Untrusted files are never unpickled: no pickle import, torch.load, or np.load(allow_pickle=True) in the package."""

import ast
from pathlib import Path

import brainuad

PACKAGE = Path(brainuad.__file__).parent
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "joblib", "shelve", "marshal"}


def unsafe_calls(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(node.module)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = ast.unparse(node.func)
            if name in ("torch.load", "torch.jit.load"):
                found.append(name)
            if name.endswith("load") and any(
                k.arg == "allow_pickle" and getattr(k.value, "value", False) is True for k in node.keywords
            ):
                found.append(f"{name}(allow_pickle=True)")
    return found


def test_detector_catches_unsafe_code():
    assert unsafe_calls("import pickle") == ["pickle"]
    assert unsafe_calls("torch.load(f)") == ["torch.load"]
    assert unsafe_calls("np.load(f, allow_pickle=True)") == ["np.load(allow_pickle=True)"]
    assert unsafe_calls('"""never pickle"""\nnp.load(f, mmap_mode="r")') == []


def test_package_never_unpickles():
    offenders = {str(p.relative_to(PACKAGE)): unsafe_calls(p.read_text()) for p in PACKAGE.rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}
