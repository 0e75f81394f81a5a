"""The ``brainuad`` logger: configured by the command line only (-v debug, -q warnings), never by the library."""

import logging
import subprocess
import sys

import pytest

from brainuad.cli import main


@pytest.fixture
def chatty_verb(monkeypatch):
    """``brainuad models`` replaced by a verb that logs at every level from a module logger, as library code does."""
    import brainuad.cli.more as more

    seen = {}

    def verb(args):
        logger = logging.getLogger("brainuad.train.example")
        logger.debug("a debug line")
        logger.info("an info line")
        logger.warning("a warning line")
        seen["quiet"] = getattr(args, "quiet", None)
        return 0

    monkeypatch.setattr(more, "_run_models", verb)
    return seen


def test_default_shows_information_not_debug(chatty_verb, capsys):
    assert main(["models"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "brainuad models: an info line" in err and "brainuad models: warning: a warning line" in err
    assert not any("debug" in line for line in err)


def test_verbose_shows_a_debug_line(chatty_verb, capsys):
    assert main(["-v", "models"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "brainuad models: debug: a debug line" in err
    assert any(line.startswith("brainuad models: debug: brainuad ") for line in err)  # main's own: version, argv
    assert main(["--verbose", "models"]) == 0 and "debug: a debug line" in capsys.readouterr().err


def test_quiet_hides_information_keeps_warnings(chatty_verb, capsys):
    assert main(["-q", "models"]) == 0
    err = capsys.readouterr().err
    assert "an info line" not in err and "debug" not in err
    assert "brainuad models: warning: a warning line" in err


def test_global_quiet_and_a_verbs_own_quiet_do_not_clash(capsys):
    # The verb's --quiet (no progress bar) still parses after the verb; the global one silences the bar too.
    from brainuad.cli import build_parser

    args = build_parser().parse_args(["-q", "detect", "s.nii.gz", "--model", "m", "--out", "o"])
    assert args.verbosity == "quiet" and args.quiet is False  # main() sets args.quiet from the global -q
    args = build_parser().parse_args(["detect", "s.nii.gz", "--model", "m", "--out", "o", "--quiet"])
    assert args.verbosity is None and args.quiet is True
    with pytest.raises(SystemExit):
        build_parser().parse_args(["-q", "-v", "models"])


def test_main_leaves_the_callers_logging_as_it_found_it(chatty_verb, capsys):
    package, root = logging.getLogger("brainuad"), logging.getLogger()
    before = (list(package.handlers), package.level, package.propagate, list(root.handlers), root.level)
    assert main(["-v", "models"]) == 0
    assert (list(package.handlers), package.level, package.propagate, list(root.handlers), root.level) == before


def test_the_library_configures_no_logging():
    # A fresh interpreter: importing the API and logging through it adds no handler anywhere and sets no level.
    code = (
        "import logging\n"
        "import brainuad, brainuad.api\n"
        "from brainuad.train.epochs import tensorboard_writer\n"
        "logging.getLogger('brainuad.train.epochs').info('x')\n"
        "root, package = logging.getLogger(), logging.getLogger('brainuad')\n"
        "print(len(root.handlers), root.level, [type(h).__name__ for h in package.handlers], package.level)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", str(logging.WARNING), "[]", "0"]


@pytest.mark.parametrize(
    ("flag", "shown", "hidden"), [("--verb", "debug: a debug line", None), ("--qui", None, "info")]
)
def test_abbreviated_global_flags_take_effect(chatty_verb, capsys, flag, shown, hidden):
    # argparse accepts --verb for --verbose: the level must follow what was parsed, not only the words typed.
    assert main([flag, "models"]) == 0
    err = capsys.readouterr().err
    if shown:
        assert shown in err
    if hidden:
        assert "an info line" not in err and "a warning line" in err
