"""The model contract (brainuad.models.base): a method added in one module — here a deliberately tiny example that
exists only in this test — trains, calibrates and detects through the same verbs as the shipped ones; and the
package keeps its shape: no model name spelled outside models/, old run folders still load (its layers and the
absence of import cycles are import-linter's contracts in pyproject.toml, run by the README's test command)."""

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from brainuad.cli import main
from brainuad.config import CONFIG_VERSION, ConfigError, config_from_json, to_dict
from brainuad.models.base import Method, ModelConfig, TrainingHooks, get_method, method_names, register, unregister
from brainuad.train.checkpoints import load_config, load_model

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "brainuad"


# ---- the example method: everything a new model needs, in one place ----
@dataclass(frozen=True)
class GainOptions:
    """Settings of the example model.

    Attributes:
        init_gain: The gain the model starts from.
    """

    init_gain: float = 0.5


class GainModel(TrainingHooks, nn.Module):
    """Reconstructs a scan as gain × scan: one learned number."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.gain = nn.Parameter(torch.tensor(float(config.options.init_gain)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * x


class Gain(Method):
    name = "example-gain"
    summary = "a one-parameter example model (tests only)"
    Options = GainOptions

    def build(self, config: ModelConfig) -> nn.Module:
        return GainModel(config)


@pytest.fixture
def example_method():
    method = register(Gain())
    yield method
    unregister(method.name)


def _cases(folder: Path, n: int = 4) -> Path:
    from brainuad.io.volumes import Volume
    from brainuad.preprocess.pipeline import PreprocessedCase, save_case
    from brainuad.preprocess.registration import Transform
    from brainuad.preprocess.templates import Grid

    shape = (16, 16, 16)
    grid = Grid("tiny", shape, tuple(tuple(map(float, r)) for r in np.eye(4)))
    coords = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    brain = sum(c**2 for c in coords) < 0.7
    rng = np.random.default_rng(0)
    for i in range(n):
        image = np.where(brain, 0.4 + 0.3 * rng.random(shape), 0).astype(np.float32)
        case = PreprocessedCase(
            f"case{i}", Volume(image, np.eye(4)), Volume(brain, np.eye(4)),
            Transform(np.eye(4), np.eye(4), shape, ("R", "A", "S")), grid, {"name": f"case{i}"},
        )  # fmt: skip
        save_case(case, folder / f"case{i}")
    return folder


def test_a_method_added_through_the_contract_trains_calibrates_and_detects(example_method, tmp_path, capsys):
    from brainuad.infer.inference import detect_case
    from brainuad.preprocess.pipeline import load_case

    data, run = _cases(tmp_path / "data"), tmp_path / "run"
    assert main(["models", "--methods"]) == 0
    assert "example-gain" in capsys.readouterr().out
    common = ["--data", str(data), "--out", str(run), "--device", "cpu", "--quiet"]
    # A setting of another model is refused, naming the flag; the example's own flag is taken.
    assert main(["train", "--method", "example-gain", "--kl-weight", "2", *common]) == 2
    assert "--kl-weight: not a setting of the 'example-gain' model" in capsys.readouterr().err
    train = ["train", "--method", "example-gain", "--init-gain", "0.8", "--epochs", "3", "--lr", "0.05", *common]
    assert main([*train, "--batch-size", "2", "--val-fraction", "0.5"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["version"] == CONFIG_VERSION
    assert saved["model"]["kind"] == "example-gain" and saved["model"]["options"] == {"init_gain": 0.8}
    model, _ = load_model(run)
    assert isinstance(model, GainModel) and abs(model.gain.item() - 1.0) < 0.2  # learned towards the identity
    assert json.loads((run / "summary.json").read_text())["reconstruction_check"]["beats_mean_image"] is not None
    assert main(["calibrate", "--model", str(run), "--device", "cpu"]) == 0
    case = load_case(data / "case0")
    detection = detect_case(model, case, threshold=0.5, device="cpu")
    assert detection.anomaly.shape == case.image.shape


def test_config_formats_old_runs_load_newer_are_refused(tmp_path):
    # config.json as brainuad wrote it before the model contract (format 1: method settings flat, num_workers).
    old = {
        "preprocessing": {"preset": "paper-2mm"},
        "model": {"kind": "vae", "latent": 32, "kl_weight": 0.5, "noise_std": 0.2, "noise_scale": 8,
                  "normative_centre": "median", "normative_score": "abs", "normative_floor": 0.02},
        "training": {"epochs": 3, "num_workers": 0},
    }  # fmt: skip
    config = config_from_json(old)
    assert config.version == CONFIG_VERSION and config.model.options.kl_weight == 0.5
    assert config_from_json(to_dict(config)) == config  # format 2 round-trips
    newer = {**to_dict(config), "version": CONFIG_VERSION + 1}
    with pytest.raises(ConfigError, match=f"config format {CONFIG_VERSION + 1} was written by a newer brainuad"):
        config_from_json(newer)
    (tmp_path / "config.json").write_text(json.dumps(newer))
    with pytest.raises(Exception, match="newer brainuad"):
        load_config(tmp_path / "config.json")
    with pytest.raises(ConfigError, match="'diffusion' is not a registered model; known: "):
        config_from_json({"model": {"kind": "diffusion"}})
    with pytest.raises(ConfigError, match=r"model\.options: unknown key"):
        config_from_json({"version": 2, "model": {"kind": "vae", "options": {"noise_std": 0.1}}})


def test_no_model_name_is_spelled_outside_models():
    names = set(method_names())
    assert {"ae", "spatial-ae", "vae", "dae", "fanogan", "intensity", "normative"} <= names
    found = []
    for path in PACKAGE.rglob("*.py"):
        if "models" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert not found, "model names spelled outside brainuad/models (ask the registry instead):\n" + "\n".join(found)


def test_every_method_honours_the_contract():
    for name in method_names():
        method = get_method(name)
        assert method.name == name and method.summary
        config = ModelConfig(kind=name, stem_channels=4, channels=(4, 8, 8, 8), latent=8, input_shape=(16, 16, 16))
        model = method.build(config)
        assert isinstance(model, nn.Module) and isinstance(model, TrainingHooks)
        x = torch.rand(1, 1, 16, 16, 16)
        method.prepare(model, x[:, 0].numpy(), [0])
        assert model.eval()(x).shape == x.shape


def test_a_failing_method_module_leaves_no_half_filled_registry(monkeypatch):
    import brainuad.models.base as registry

    monkeypatch.setattr(registry, "_LOADED", False)
    monkeypatch.setattr(registry, "_METHODS", {})
    monkeypatch.setattr(registry, "_load_entry_points", lambda: (_ for _ in ()).throw(ImportError("broken plug-in")))
    with pytest.raises(ImportError, match="broken plug-in"):
        registry.get_method("vae")
    assert registry._METHODS == {} and not registry._LOADED  # the next lookup tries again
    monkeypatch.setattr(registry, "_load_entry_points", lambda: None)
    assert registry.get_method("vae").name == "vae"
