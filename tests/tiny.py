"""Tiny healthy cases and a tiny model, shared by the training, cohort, reliability and demo tests."""

import numpy as np

from brainuad.config import Config, ModelConfig, TrainConfig
from brainuad.io.volumes import Volume
from brainuad.preprocess.cases import PreprocessedCase, save_case
from brainuad.preprocess.registration import Transform
from brainuad.preprocess.templates import Grid

SHAPE = (32, 32, 16)
TINY_CLI = ["--device", "cpu", "--channels", "4", "8", "8", "8", "--stem-channels", "4", "--latent", "16", "--quiet"]
TINY_MODEL = ModelConfig(stem_channels=4, channels=(4, 8, 8, 8), latent=16)


def write_cases(folder, n, shape=SHAPE, seed=0):
    """Tiny preprocessed 'healthy' cases: a smooth ellipsoidal brain with random contrast."""
    rng = np.random.default_rng(seed)
    grid = Grid("tiny", shape, tuple(tuple(map(float, r)) for r in np.eye(4)))
    coords = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    brain = (coords[0] ** 2 / 0.7 + coords[1] ** 2 / 0.8 + coords[2] ** 2 / 0.7) < 1
    for i in range(n):
        image = np.where(brain, 0.5 + 0.2 * rng.random() * np.cos(3 * coords[0] + rng.random()), 0).astype(np.float32)
        case = PreprocessedCase(
            f"case{i}",
            Volume(image, np.eye(4)),
            Volume(brain, np.eye(4)),
            Transform(np.eye(4), np.eye(4), shape, ("R", "A", "S")),
            grid,
            {"name": f"case{i}"},
        )
        save_case(case, folder / f"case{i}")
    return folder


def tiny_config(**training) -> Config:
    return Config(
        model=TINY_MODEL,
        training=TrainConfig(**{"epochs": 2, "batch_size": 2, "device": "cpu", "augment": "off", **training}),
    )
