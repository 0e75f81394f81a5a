import json

import pytest

from brainuad.config import Config, PreprocessConfig, from_dict, replace, to_dict
from brainuad.errors import ConfigError


def test_round_trip_through_json():
    config = Config(preprocessing=PreprocessConfig(preset="whole-brain", percentiles=(1.0, 99.0)))
    data = json.loads(json.dumps(to_dict(config)))
    assert from_dict(Config, data) == config


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"preprocessing": {"preset": "huge"}}, "preset"),
        ({"preprocessing": {"unknown": 1}}, "unknown key"),
        ({"preprocessing": {"percentiles": [1.0]}}, "expected 2 values"),
        ({"preprocessing": {"registration_seed": "0"}}, "integer"),
        ({"preprocessing": {"percentiles": [99.0, 1.0]}}, "low < high"),
        ({"extra_section": {}}, "unknown key"),
        ([], "expected an object"),
    ],
)
def test_invalid_configs_are_rejected(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Config, data)


def test_replace_validates():
    config = PreprocessConfig()
    assert replace(config, preset="whole-brain").preset == "whole-brain"
    with pytest.raises(ConfigError):
        replace(config, skull_strip="magic")
