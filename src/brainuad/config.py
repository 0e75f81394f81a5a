"""One frozen dataclass tree for every setting, saved as JSON beside the outputs it produced.

Each pipeline stage takes only its own section. :func:`from_dict` validates JSON against the schema: unknown keys
are rejected and wrong types are reported with their dotted path, so a hand-edited or foreign config never loads
half-right.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from brainuad.errors import ConfigError

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
        registration_seed: Seed passed to ANTs' metric sampling (ANTs stays reproducible to ~1 mm only).
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


ModelKind = Literal["ae", "spatial-ae", "vae", "dae", "fanogan", "intensity", "normative"]
NormativeCentre = Literal["median", "mean"]
NormativeScore = Literal["abs", "z"]
NormKind = Literal["batch", "group"]
AugmentMode = Literal["auto", "on", "off"]
LrSchedule = Literal["constant", "cosine"]
Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class ModelConfig:
    """The network (Luo et al.'s 3D residual autoencoder and its ablation variants).

    Attributes:
        kind: ``ae`` = dense latent (the paper's); ``spatial-ae`` = spatial latent at 1/16 resolution; baselines:
            ``vae`` = variational AE with a dense latent (Baur et al.), ``dae`` = denoising U-Net trained to remove
            coarse noise (Kascenas et al.), ``fanogan`` = f-AnoGAN in 3D (Schlegl et al., two-stage WGAN-GP + encoder),
            ``intensity`` = no network, the scaled image itself is the anomaly map; ``normative`` = no network, the
            voxel-wise centre (and spread) of the healthy training cohort is the reconstruction.
        latent: Size of the dense latent z (paper: 512; ablation 128–1024).
        spatial_channels: Channels of the spatial latent (ablation: 1–64).
        stem_channels: Channels of the first convolution (16 in the published code).
        channels: Output channels of the down-sampling residual blocks: four (the paper's); ``ae``/``spatial-ae``
            also take two to five.
        input_shape: Volume shape the model is built for (the crop grid); every side divisible by
            ``input_pool`` × 2 ** len(channels) (16 for the paper's network).
        input_pool: ``ae``/``spatial-ae``: the network sees the volume average-pooled by this factor and its output
            is up-sampled back (trilinear) — a cheap quick-run network; 1 = full resolution (the paper's).
        kl_weight: ``vae``: weight of the KL term, per voxel (the loss is MSE + kl_weight × KL / voxels).
        noise_std: ``dae``: standard deviation of the coarse training noise (on the 0…1 intensity scale).
        noise_scale: ``dae``: the noise is drawn on a grid this many times coarser per side, then upsampled.
        mean_skip: ``ae``/``spatial-ae``: the output is the training cohort's mean image (stored with the weights)
            plus the decoder's output, so the network learns only the individual's deviation from the average brain
            (off = the paper's network).
        norm: ``batch`` (the paper's BatchNorm) or ``group`` (GroupNorm, independent of the batch size).
        normative_centre: ``normative``: voxel-wise ``median`` (spread = 1.4826 × MAD) or ``mean`` (spread = SD).
        normative_score: ``normative``: anomaly map ``abs`` = |x − centre| or ``z`` = |x − centre| / spread.
        normative_floor: ``normative``: lower bound of the spread (0…1 intensity scale), keeping z-scores finite.
    """

    kind: ModelKind = "ae"
    latent: int = 512
    spatial_channels: int = 16
    stem_channels: int = 16
    channels: tuple[int, ...] = (32, 64, 128, 256)
    input_shape: tuple[int, int, int] = (160, 192, 96)
    kl_weight: float = 1.0
    noise_std: float = 0.2
    noise_scale: int = 8
    mean_skip: bool = False
    norm: NormKind = "batch"
    input_pool: int = 1
    normative_centre: NormativeCentre = "median"
    normative_score: NormativeScore = "abs"
    normative_floor: float = 0.02

    def __post_init__(self) -> None:
        if self.normative_floor <= 0:
            raise ConfigError("model.normative_floor must be > 0")
        if self.kl_weight < 0 or self.noise_std < 0 or self.noise_scale < 1:
            raise ConfigError("model.kl_weight and model.noise_std must be >= 0 and model.noise_scale >= 1")
        if self.latent < 1 or self.spatial_channels < 1 or self.stem_channels < 1 or min(self.channels) < 1:
            raise ConfigError("model sizes (latent, spatial_channels, stem_channels, channels) must be positive")
        if self.input_pool not in (1, 2, 4):
            raise ConfigError("model.input_pool must be 1, 2 or 4")
        residual_ae = self.kind in ("ae", "spatial-ae")
        if not 2 <= len(self.channels) <= 5 or (not residual_ae and len(self.channels) != 4):
            raise ConfigError("model.channels: four values (ae and spatial-ae also take two to five)")
        if not residual_ae and (self.input_pool != 1 or self.mean_skip):
            raise ConfigError("model.input_pool and model.mean_skip apply to the ae and spatial-ae models only")
        factor = self.input_pool * 2 ** len(self.channels)
        bad = [s for s in self.input_shape if s < factor or s % factor]
        if bad:
            raise ConfigError(
                f"model.input_shape {self.input_shape}: every side must be a positive multiple of {factor} "
                f"(input_pool {self.input_pool} × {len(self.channels)} stride-2 stages); use a crop preset or pad "
                "the volume"
            )


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
        num_workers: DataLoader worker processes.
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
    num_workers: int = 0
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
class Config:
    """The whole tree; stages read their own section."""

    preprocessing: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    # PostprocessConfig is declared at the end of this module, hence the lambda.
    postprocessing: PostprocessConfig = field(default_factory=lambda: PostprocessConfig())


def quick_recipe() -> Config:
    """The quick CPU recipe (``--recipe quick``; the demo's and the shipped models'), measured on held-out real T1
    individuals in benchmarks/README.md: the network sees the volume pooled ×2 (three residual stages), outputs the
    training cohort's mean image plus its deviation from it, is trained inside the brain only with Adam at 1e-3,
    linear warm-up and cosine decay. ``--recipe paper`` (the default) keeps Luo et al.'s network and training."""
    return Config(
        model=ModelConfig(
            kind="ae", latent=256, stem_channels=8, channels=(16, 32, 64), input_pool=2, mean_skip=True, norm="batch"
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


T = TypeVar("T")


def to_dict(obj: Any) -> Any:
    """A config dataclass as plain JSON-ready data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(cls: type[T], data: Any, *, where: str = "") -> T:
    """Build config dataclass ``cls`` from JSON data, strictly.

    Missing keys take their defaults; unknown keys and wrong types raise :class:`ConfigError` naming the key.
    """
    name = where or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected an object, got {type(data).__name__}")
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {unknown}; known keys are {sorted(known)}")
    kwargs = {key: _coerce(hints[key], value, f"{name}.{key}") for key, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: {exc}") from exc


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=where)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} matches none of {options}")
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {tp}")


def replace(obj: T, **changes: Any) -> T:
    """``dataclasses.replace`` that validates the new values like :func:`from_dict` (for CLI overrides)."""
    data = to_dict(obj)
    data.update({k: to_dict(v) for k, v in changes.items()})
    return from_dict(type(obj), data)


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
