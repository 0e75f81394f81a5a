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


ModelKind = Literal["ae", "spatial-ae", "vae", "dae", "fanogan", "intensity"]
AugmentMode = Literal["auto", "on", "off"]
Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class ModelConfig:
    """The network (Luo et al.'s 3D residual autoencoder and its ablation variants).

    Attributes:
        kind: ``ae`` = dense latent (the paper's); ``spatial-ae`` = spatial latent at 1/16 resolution; baselines:
            ``vae`` = variational AE with a dense latent (Baur et al.), ``dae`` = denoising U-Net trained to remove
            coarse noise (Kascenas et al.), ``fanogan`` = f-AnoGAN in 3D (Schlegl et al., two-stage WGAN-GP + encoder),
            ``intensity`` = no network, the scaled image itself is the anomaly map.
        latent: Size of the dense latent z (paper: 512; ablation 128–1024).
        spatial_channels: Channels of the spatial latent (ablation: 1–64).
        stem_channels: Channels of the first convolution (16 in the published code).
        channels: Output channels of the four down-sampling residual blocks.
        input_shape: Volume shape the model is built for (the crop grid); every side divisible by 16.
        kl_weight: ``vae``: weight of the KL term, per voxel (the loss is MSE + kl_weight × KL / voxels).
        noise_std: ``dae``: standard deviation of the coarse training noise (on the 0…1 intensity scale).
        noise_scale: ``dae``: the noise is drawn on a grid this many times coarser per side, then upsampled.
    """

    kind: ModelKind = "ae"
    latent: int = 512
    spatial_channels: int = 16
    stem_channels: int = 16
    channels: tuple[int, int, int, int] = (32, 64, 128, 256)
    input_shape: tuple[int, int, int] = (160, 192, 96)
    kl_weight: float = 1.0
    noise_std: float = 0.2
    noise_scale: int = 8

    def __post_init__(self) -> None:
        if self.kl_weight < 0 or self.noise_std < 0 or self.noise_scale < 1:
            raise ConfigError("model.kl_weight and model.noise_std must be >= 0 and model.noise_scale >= 1")
        if self.latent < 1 or self.spatial_channels < 1 or self.stem_channels < 1 or min(self.channels) < 1:
            raise ConfigError("model sizes (latent, spatial_channels, stem_channels, channels) must be positive")
        bad = [s for s in self.input_shape if s < 16 or s % 16]
        if bad:
            raise ConfigError(
                f"model.input_shape {self.input_shape}: every side must be a positive multiple of 16 "
                "(four stride-2 stages); use a crop preset or pad the volume"
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

    def __post_init__(self) -> None:
        if self.val_every < 1 or self.checkpoint_minutes < 0:
            raise ConfigError("training.val_every must be >= 1 and training.checkpoint_minutes >= 0")
        if self.steps_per_epoch < 0:
            raise ConfigError("training.steps_per_epoch must be >= 0")
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
