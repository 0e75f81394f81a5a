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
    vae = _config_from_args(_train_args("--recipe", "quick", "--model", "vae", "--kl-weight", "0.1"))
    assert vae.model.kind == "vae" and vae.model.options.kl_weight == 0.1 and not vae.model.mean_skip
    # Booleans get both spellings; choices come from the Literal types.
    assert _config_from_args(_train_args("--no-bf16", "--loss-mask")).training.bf16 is False
    with pytest.raises(SystemExit):
        _train_args("--lr-schedule", "linear")


def test_a_setting_of_another_model_and_bad_values_are_refused():
    with pytest.raises(ConfigError, match="--kl-weight: not a setting of the 'dae' model"):
        _config_from_args(_train_args("--model", "dae", "--kl-weight", "2"))
    with pytest.raises(ConfigError, match=r"training\.lr must be > 0"):
        _config_from_args(_train_args("--lr", "0"))
    with pytest.raises(ConfigError, match="must be >= 0"):
        _config_from_args(_train_args("--median-mm", "-1"))
