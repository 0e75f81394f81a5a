"""Flags made from the config dataclasses (brainuad.cli.flags): one declaration of each setting, default and choice."""

import pytest

from brainuad.cli import build_parser
from brainuad.cli.flags import field_help
from brainuad.cli.train import _config_from_args
from brainuad.config import Config, ConfigError, PostprocessConfig, TrainConfig, quick_recipe


def _train_args(*words):
    return build_parser().parse_args(["train", "--data", "d", "--out", "o", *words])


def test_help_comes_from_the_attributes_docstring():
    helps = field_help(TrainConfig)
    assert set(helps) >= {"epochs", "batch_size", "lr", "device", "loss_mask"}
    assert helps["epochs"].startswith("Passes over the training split")
    assert "``" not in " ".join(helps.values())  # reST markup stripped for the terminal
    assert "odd number of voxels" in field_help(PostprocessConfig)["median_mm"]  # continuation lines kept


def test_flags_default_to_the_recipe_and_override_it():
    assert _config_from_args(_train_args()) == Config()  # nothing given: the paper's tree, untouched
    quick = _config_from_args(_train_args("--recipe", "quick", "--lr", "0.01", "--median-mm", "3"))
    assert quick.model == quick_recipe().model and quick.training.lr == 0.01
    assert quick.training.epochs == quick_recipe().training.epochs and quick.postprocessing.median_mm == 3.0
    # Another model than the recipe's family starts from the default network, with its own settings.
    vae = _config_from_args(_train_args("--recipe", "quick", "--method", "vae", "--kl-weight", "0.1"))
    assert vae.model.kind == "vae" and vae.model.options.kl_weight == 0.1 and not vae.model.mean_skip
    # Booleans get both spellings; choices come from the Literal types.
    assert _config_from_args(_train_args("--no-bf16", "--loss-mask")).training.bf16 is False
    with pytest.raises(SystemExit):
        _train_args("--lr-schedule", "linear")


def test_a_setting_of_another_model_and_bad_values_are_refused():
    with pytest.raises(ConfigError, match="--kl-weight: not a setting of the 'dae' model"):
        _config_from_args(_train_args("--method", "dae", "--kl-weight", "2"))
    with pytest.raises(ConfigError, match=r"training\.lr must be > 0"):
        _config_from_args(_train_args("--lr", "0"))
    with pytest.raises(ConfigError, match="must be >= 0"):
        _config_from_args(_train_args("--median-mm", "-1"))


def test_train_chooses_its_method_with_method_and_refuses_model_naming_method(capsys):
    # One meaning per flag (issue 36): --model names a trained model (calibrate, detect, evaluate, bids).
    assert _config_from_args(_train_args("--method", "intensity")).model.kind == "intensity"
    assert _config_from_args(_train_args("--method", "vae", "--kl-weight", "0.1")).model.options.kl_weight == 0.1
    from brainuad.cli import main

    for verb in (["train", "--data", "d", "--out", "o"], ["ablate", "--data", "d", "--cases", "c", "--out", "o"]):
        with pytest.raises(SystemExit) as exc:
            main([*verb, "--model", "intensity"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"brainuad {verb[0]}: error:" in err and "--method intensity" in err and "Traceback" not in err


def test_resume_checks_a_models_settings_against_the_saved_model(tmp_path):
    from brainuad.cli.train import _resume_config
    from brainuad.config import ModelConfig, replace
    from brainuad.train.checkpoints import save_config

    saved = replace(Config(), model=ModelConfig(kind="vae", options={"kl_weight": 0.5}))
    save_config(saved, tmp_path / "config.json")
    args = build_parser().parse_args(["train", "--data", "d", "--out", str(tmp_path), "--resume", "--kl-weight", "0.5"])
    assert _resume_config(args) == saved  # --method not typed: the run's model, whose setting this is
    args = build_parser().parse_args(["train", "--data", "d", "--out", str(tmp_path / "none"), "--resume"])
    assert _resume_config(args) is None  # nothing saved: train() says there is nothing to resume


def test_config_sections_stay_positional():
    from brainuad.config import ModelConfig, PreprocessConfig

    config = Config(PreprocessConfig(preset="paper-2mm"), ModelConfig(latent=8), TrainConfig(epochs=2))
    assert config.preprocessing.preset == "paper-2mm" and config.model.latent == 8 and config.training.epochs == 2


def test_warnings_reach_the_user_as_one_line_without_source_code(tmp_path):
    # Python's default shows "path/to/preprocessing.py:367: DegradedInputWarning: …" and the source line under it.
    import subprocess
    import sys

    script = tmp_path / "warn.py"
    script.write_text(
        "import warnings\n"
        "import brainuad.cli.more as more\n"
        "from brainuad.cli import main\n"
        "from brainuad.preprocess.pipeline import DegradedInputWarning\n"
        "def verb(args):\n"
        "    warnings.warn('scan.nii.gz: QC: brain volume 2300 mL', DegradedInputWarning, stacklevel=2)\n"
        "    warnings.warn('foreign', UserWarning, stacklevel=1)\n"
        "    return 0\n"
        "more._run_models = verb\n"
        "raise SystemExit(main(['models']))\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "brainuad models: warning: scan.nii.gz: QC: brain volume 2300 mL" in lines
    assert f"brainuad models: warning (UserWarning from {script.name}:7): foreign" in lines
    assert len(lines) == 2 and "warnings.warn" not in result.stderr


def test_preprocessing_workers_word_warnings_as_the_cli(monkeypatch):
    # Spawned or forkserver workers do not inherit the parent's formatter: preprocess_batch passes the verb on.
    import signal
    import warnings

    from brainuad.preprocess.pipeline import _worker_init

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # the worker's SIGTERM handler: not in the test process
    _worker_init(None)
    assert getattr(warnings.formatwarning, "brainuad_command", None) is None  # a library call keeps Python's
    _worker_init("preprocess")
    line = warnings.formatwarning("scan.nii.gz: QC", UserWarning, "/elsewhere/x.py", 3)
    assert line == "brainuad preprocess: warning (UserWarning from x.py:3): scan.nii.gz: QC\n"


def test_every_flag_of_every_verb_says_what_it_does():
    """No option without help, and no "(default: None)": a None default is explained by the help itself."""
    import argparse

    from brainuad.cli import build_parser

    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing, none_default = [], []
    for verb, sub in verbs.items():
        for action in sub._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            if not (action.help or "").strip():
                missing.append(f"{verb} {action.option_strings[-1]}")
            elif "(default: None)" in action.help:
                none_default.append(f"{verb} {action.option_strings[-1]}")
    assert not missing, f"flags without help: {missing}"
    assert not none_default, f"flags showing '(default: None)': {none_default}"
