"""Prints the bad-input corpus outcome table (kind × verb) at the end of the test run."""

from bad_inputs.corpus import OUTCOMES


def pytest_terminal_summary(terminalreporter):
    if not OUTCOMES:
        return
    verbs = sorted({verb for _, verb in OUTCOMES})
    kinds = list(dict.fromkeys(kind for kind, _ in OUTCOMES))
    terminalreporter.section("bad-input corpus: outcome per kind and verb")
    terminalreporter.write_line(f"{'kind':26s}" + "".join(f"{v:>14s}" for v in verbs))
    for kind in kinds:
        cells = "".join(f"{OUTCOMES.get((kind, v), '-'):>14s}" for v in verbs)
        terminalreporter.write_line(f"{kind:26s}{cells}")
