"""One frozen dataclass tree for every setting, saved as JSON beside the outputs it produced.

Each pipeline stage takes only its own section. :func:`config_from_json` validates JSON against the schema
(:mod:`brainuad.schema`): unknown keys are rejected and wrong types are reported with their dotted path, so a
hand-edited or foreign config never loads half-right. The model section and each method's own settings are declared
by the models (:mod:`brainuad.models.base`); the CLI builds its flags from these dataclasses and their docstrings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from brainuad.errors import ConfigError
from brainuad.models.base import ModelConfig
from brainuad.schema import from_dict, replace, to_dict

__all__ = [
    "CONFIG_VERSION",
    "RECIPES",
    "Config",
    "ConfigError",
    "ModelConfig",
    "PostprocessConfig",
    "PreprocessConfig",
    "TrainConfig",
    "config_from_json",
    "from_dict",
    "quick_recipe",
    "replace",
    "to_dict",
]

SkullStripMethod = Literal["auto", "deepbet", "hd-bet", "template", "none"]
CropPreset = Literal["paper", "whole-brain", "paper-2mm"]
RegistrationType = Literal["rigid", "affine"]
TemplateContrast = Literal["t1", "t2"]
IntensityScaling = Literal["percentile", "minmax"]


@dataclass(frozen=True)
class PreprocessConfig:
    """How a raw scan becomes the model's input.

    Attributes:
        preset: ``paper`` = 160×192×96 at 1 mm as in Luo et al. (96 axial slices do not cover the whole brain);
            ``whole-brain`` = 160×208×160 at 1 mm, covering the entire MNI brain; ``paper-2mm`` = the paper's field
            of view at 2 mm (80×96×48) for quick CPU runs.
        skull_strip: ``auto`` picks ``none`` for scans whose background is already zero and the default stripper
            (``deepbet``) otherwise.
        registration: ``rigid`` (6 dof, the paper's) or ``affine`` (12 dof).
        template_contrast: Register to the ICBM152 2009 T1 template (``t1``, mutual information) or to a T2-like
            template synthesised from its tissue maps (``t2``).
        scaling: ``percentile`` (robust, inside the brain mask) or ``minmax`` (the paper's).
        percentiles: Lower/upper percentiles inside the brain mapped to 0 and 1 by ``percentile`` scaling.
        registration_seed: Seed of ANTs' metric sampling (passed as seed + 1: ANTs reads 0 as "use the clock").
    """

    preset: CropPreset = "paper"
    skull_strip: SkullStripMethod = "auto"
    registration: RegistrationType = "rigid"
    template_contrast: TemplateContrast = "t1"
    scaling: IntensityScaling = "percentile"
    percentiles: tuple[float, float] = (0.5, 99.5)
    registration_seed: int = 0

    def __post_init__(self) -> None:
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ConfigError(f"preprocessing.percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")


AugmentMode = Literal["auto", "on", "off"]
LrSchedule = Literal["constant", "cosine"]
Device = Literal["auto", "cpu", "cuda"]

#: config.json format: 1 = before the model contract (method settings flat in ``model``); 2 = ``model.options``.
CONFIG_VERSION = 2


@dataclass(frozen=True)
class TrainConfig:
    """How the model is trained (defaults: the paper's recipe).

    Attributes:
        epochs: Passes over the training split (paper: 200).
        batch_size: Volumes per step (paper: 8).
        lr: Adam learning rate (paper: 1e-4).
        weight_decay: Adam weight decay (paper: 1e-5).
        seed: Seeds the split, initialisation, shuffling and augmentation.
        val_fraction: Share of healthy scans held out for validation (paper: 0.2).
        augment: ``auto`` = on when the training split has fewer than ``augment_below`` scans.
        augment_below: Cohort size under which ``auto`` turns augmentation on.
        device: ``auto`` picks CUDA when available.
        bf16: bfloat16 autocast on CUDA (ignored on CPU).
        channels_last: channels-last-3d memory format on CUDA.
        compile: ``torch.compile`` the training step; ``None`` = on CUDA only (a failed compile falls back to eager).
        steps_per_epoch: 0 = one pass over the training split per epoch; otherwise this many steps, each drawing
            a batch at random (with replacement) — for small cohorts with augmentation, as nnU-Net does.
        val_every: Validate every this many epochs (and after the last); the best weights are chosen among these.
        checkpoint_minutes: Write a resumable checkpoint at most this often (wall time; 0 = every epoch), and at
            the end.
        loss_mask: Reconstruction loss inside the brain only (voxels > 0: preprocessed scans are zero outside the
            brain); off = over the whole volume (the paper's).
        lr_schedule: ``constant`` (the paper's) or ``cosine`` decay to zero over the whole run.
        warmup_steps: Linear learning-rate warm-up over this many steps (0 = none).
    """

    epochs: int = 200
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-5
    seed: int = 0
    val_fraction: float = 0.2
    augment: AugmentMode = "auto"
    augment_below: int = 50
    device: Device = "auto"
    bf16: bool = True
    channels_last: bool = True
    compile: bool | None = None
    steps_per_epoch: int = 0
    val_every: int = 1
    checkpoint_minutes: float = 10.0
    loss_mask: bool = False
    lr_schedule: LrSchedule = "constant"
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if self.val_every < 1 or self.checkpoint_minutes < 0:
            raise ConfigError("training.val_every must be >= 1 and training.checkpoint_minutes >= 0")
        if self.steps_per_epoch < 0 or self.warmup_steps < 0:
            raise ConfigError("training.steps_per_epoch and training.warmup_steps must be >= 0")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("training.epochs and training.batch_size must be at least 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"training.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError("training.lr must be > 0 and training.weight_decay >= 0")


@dataclass(frozen=True)
class PostprocessConfig:
    """How a residual becomes an anomaly map and a segmentation, in millimetres so that every grid filters the same
    physical extent (the paper's 1 mm sizes; a 5-voxel median at 2 mm would span 10 mm and erase MS-sized lesions).

    Attributes:
        median_mm: Side of the cubic median filter applied to the residual (paper: 5 voxels at 1 mm); rounded to an
            odd number of voxels.
        erosion_mm: The brain mask is eroded by this much before masking the map (drops the bright rim that skull
            stripping and registration leave; paper: 2 voxels at 1 mm).
        min_component_mm3: Connected components of the segmentation smaller than this are dropped (paper: 20
            voxels at 1 mm).
    """

    median_mm: float = 5.0
    erosion_mm: float = 2.0
    min_component_mm3: float = 20.0

    def __post_init__(self) -> None:
        if self.median_mm < 0 or self.erosion_mm < 0 or self.min_component_mm3 < 0:
            raise ConfigError("postprocessing.median_mm, erosion_mm and min_component_mm3 must be >= 0")


@dataclass(frozen=True)
class Config:
    """The whole tree; stages read their own section.

    Attributes:
        version: The config.json format (:data:`CONFIG_VERSION`); older files are upgraded when loaded.
    """

    preprocessing: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    postprocessing: PostprocessConfig = field(default_factory=PostprocessConfig)
    version: int = CONFIG_VERSION  # last: positional calls Config(preprocessing, model, training) keep working

    def __post_init__(self) -> None:
        if self.version != CONFIG_VERSION:
            raise ConfigError(
                f"version {self.version}: this brainuad writes config format {CONFIG_VERSION} (older files are "
                "upgraded when read with config_from_json)"
            )


def quick_recipe() -> Config:
    """The quick CPU recipe (``--recipe quick``; the demo's and the shipped models'), measured on held-out real T1
    individuals in benchmarks/README.md: the network sees the volume pooled ×2 (three residual stages), outputs the
    training cohort's mean image plus its deviation from it, is trained inside the brain only with Adam at 1e-3,
    linear warm-up and cosine decay. ``--recipe paper`` (the default) keeps Luo et al.'s network and training."""
    return Config(
        model=ModelConfig(
            latent=256, stem_channels=8, channels=(16, 32, 64), input_pool=2, mean_skip=True, norm="batch"
        ),
        training=TrainConfig(
            epochs=8,
            steps_per_epoch=50,
            batch_size=4,
            lr=1e-3,
            lr_schedule="cosine",
            warmup_steps=20,
            loss_mask=True,
            augment="off",
        ),
    )


def config_from_json(data: Any, where: str = "config") -> Config:
    """The config tree from a config.json's content, upgrading older formats (:data:`CONFIG_VERSION`).

    Raises:
        ConfigError: A format newer than this brainuad reads, unknown keys or wrong types (named).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    version = data.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(f"{where}.version: expected a positive integer, got {version!r}")
    if version > CONFIG_VERSION:
        raise ConfigError(
            f"{where}: config format {version} was written by a newer brainuad (this one reads formats 1 to "
            f"{CONFIG_VERSION}); upgrade brainuad"
        )
    if version == 1:  # method settings flat in the model section; training.num_workers (never read) dropped
        data = {**data, "version": CONFIG_VERSION}
        if isinstance(data.get("model"), dict):
            data["model"] = ModelConfig.upgrade(data["model"])
        if isinstance(data.get("training"), dict):
            data["training"] = {k: v for k, v in data["training"].items() if k != "num_workers"}
    return from_dict(Config, data, where=where)


#: ``--recipe`` name → the config tree it starts from (flags given explicitly override it).
RECIPES = {"paper": Config, "quick": quick_recipe}
