"""The model contract: what a method module under ``brainuad/models/`` declares, the model section of the config, and
the registry that finds methods by name.

A method is one module holding its ``nn.Module``, its own settings (an ``Options`` frozen dataclass, stored as
``model.options`` in config.json), its training behaviour and a :class:`Method` instance in a module-level
``METHODS`` list; the registry at the end of this module finds it by name. The training loop, the CLI flags and the
config
validation ask the registry, so adding a method touches no other file (docs/architecture.md, "How to add a model").

Training behaviour, from the least to the most a method has to write:

- nothing (``learns = False``, e.g. the intensity baseline): the run folder holds the config and empty weights;
- :meth:`Method.prepare` only (the normative model): statistics of the training cohort, no optimiser;
- the default gradient loop of :mod:`brainuad.train.loop` (autoencoders): the network's :class:`TrainingHooks` say what
  it sees (``training_input``) and what it adds to the MSE (``regulariser``);
- :meth:`Method.fit` (f-AnoGAN's two stages): the method runs its own loop on what :class:`FitContext` offers.

This module imports no torch at import time: the config tree and the CLI read it.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from brainuad.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

NormKind = Literal["batch", "group"]

#: The default model kind (the paper's dense-latent autoencoder).
DEFAULT_KIND = "ae"

#: Method settings that config.json files of brainuad before format 2 stored flat in the model section.
LEGACY_FLAT_OPTIONS = (
    "kl_weight",
    "noise_std",
    "noise_scale",
    "normative_centre",
    "normative_score",
    "normative_floor",
)


@dataclass(frozen=True)
class NoOptions:
    """This method has no settings of its own."""


@dataclass(frozen=True)
class ModelConfig:
    """The model: which method, the shape of its network, and the method's own settings.

    Attributes:
        kind: The method (``brainuad models --methods`` lists them; ``ae`` = Luo et al.'s dense-latent network).
        latent: Size of the dense latent z (paper: 512; ablation 128–1024).
        spatial_channels: Channels of the spatial latent (spatial-ae; ablation: 1–64).
        stem_channels: Channels of the first convolution (16 in the published code).
        channels: Output channels of the down-sampling residual blocks: four (the paper's); ae and spatial-ae also
            take two to five.
        input_shape: Volume shape the model is built for (the crop grid, taken from the data at training).
        input_pool: ae/spatial-ae: the network sees the volume average-pooled by this factor and its output is
            up-sampled back; 1 = full resolution (the paper's).
        mean_skip: ae/spatial-ae: output = the training cohort's mean image + the decoder's deviation from it.
        norm: ae/spatial-ae: BatchNorm (``batch``, the paper's) or GroupNorm (``group``).
        options: The method's own settings (its ``Options`` dataclass; ``None`` = its defaults).
    """

    kind: str = DEFAULT_KIND
    latent: int = 512
    spatial_channels: int = 16
    stem_channels: int = 16
    channels: tuple[int, ...] = (32, 64, 128, 256)
    input_shape: tuple[int, int, int] = (160, 192, 96)
    mean_skip: bool = False
    norm: NormKind = "batch"
    input_pool: int = 1
    options: Any = None

    def __post_init__(self) -> None:
        from brainuad.schema import from_dict

        if self.latent < 1 or self.spatial_channels < 1 or self.stem_channels < 1 or min(self.channels) < 1:
            raise ConfigError("model sizes (latent, spatial_channels, stem_channels, channels) must be positive")
        if self.input_pool not in (1, 2, 4):
            raise ConfigError("model.input_pool must be 1, 2 or 4")
        method = get_method(self.kind)
        if self.options is None:
            object.__setattr__(self, "options", method.Options())
        elif isinstance(self.options, dict):
            object.__setattr__(self, "options", from_dict(method.Options, self.options, where="model.options"))
        elif not isinstance(self.options, method.Options):
            raise ConfigError(
                f"model.options: {type(self.options).__name__} given for model {self.kind!r}, which takes "
                f"{method.Options.__name__}"
            )
        method.check(self)

    @staticmethod
    def upgrade(data: dict) -> dict:
        """A model section of config format 1 (method settings stored flat) in format 2 (``options``)."""
        data = dict(data)
        flat = {k: data.pop(k) for k in LEGACY_FLAT_OPTIONS if k in data}
        if "options" not in data:
            known = {f.name for f in dataclasses.fields(get_method(data.get("kind", DEFAULT_KIND)).Options)}
            data["options"] = {k: v for k, v in flat.items() if k in known}
        return data


class TrainingHooks:
    """What the default training loop and inference ask of a network; the defaults suit a plain autoencoder (its
    reconstruction is ``forward(x)`` in eval mode)."""

    def training_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the network sees in a training step (the target is always ``x``); the denoising AE corrupts it."""
        return x

    def regulariser(self) -> torch.Tensor | None:
        """An extra loss term from the last training forward pass (the VAE's KL divergence), or ``None``."""
        return None

    def brain_only_loss(self) -> bool:
        """Whether the default loop's MSE counts inside the brain only whatever ``training.loss_mask`` says (a
        restoration model is judged on the tissue it restores, not on the empty background)."""
        return False

    def self_check(self, x: torch.Tensor, brain: torch.Tensor, mean: torch.Tensor | None = None) -> dict | None:
        """A method's own test of having learned its task on held-out healthy scans ``x`` (``brain``: their masks;
        ``mean``: the training cohort's mean image), added to the learned-nothing guard's verdict (eval mode);
        ``None``: the reconstruction check suffices."""
        return None

    def residual_scale(self) -> Any:
        """What the residual |x − reconstruction| is divided by in the anomaly map (an array on the crop grid, e.g.
        the normative model's spread for z-scores), or ``None``."""
        return None


@dataclass
class FitContext:
    """What the training loop hands a method that runs its own loop (:meth:`Method.fit`).

    Attributes:
        config: The whole config tree (``config.model``, ``config.training``).
        device: Where the model lives.
        train_ids: Rows of the training split in the cache.
        val_ids: Rows of the validation split.
        plan: ``plan(seed, epoch)`` → the epoch's batches (lists of rows), as the default loop draws them.
        load: ``load(rows, epoch, step)`` → the batch on the device, augmented as configured (seeded by its arguments).
        raw: ``raw(rows)`` → the scans on the device as they are (no augmentation): validation, statistics.
        learning_rate: ``learning_rate(step, total_steps)`` → the configured schedule's rate at a 0-based step.
        validation_loss: ``validation_loss(model, brain_only=False)`` → mean squared reconstruction error on the
            validation split (over the whole volume, or inside the brain only), in eval mode.
        log: Append one row (``epoch``, ``train_loss``, ``val_loss``, ``seconds``, ``volumes_per_s``, ``lr``) to
            log.csv.
        save: ``save(model, name)`` writes ``name`` (``model.safetensors`` = the best weights, ``last.safetensors``).
        record: ``record(name, data)`` writes a JSON file into the run folder.
        progress: Show progress bars.
        deadline: A :func:`time.monotonic` time by which training should end (``train``'s ``deadline``), or ``None``.
    """

    config: Any
    device: Any
    train_ids: list[int]
    val_ids: list[int]
    plan: Callable[[int, int], list[list[int]]]
    load: Callable[[list[int], int, int], Any]
    raw: Callable[[list[int]], Any]
    learning_rate: Callable[[int, int], float]
    validation_loss: Callable[..., float]
    log: Callable[[dict], None]
    save: Callable[[Any, str], None]
    record: Callable[[str, dict], None]
    progress: bool = True
    deadline: float | None = None


@dataclass
class FitResult:
    """What a method's own loop reports: epochs done, the best validation loss and its epoch, the log rows."""

    epochs: int
    best_val_loss: float
    best_epoch: int
    history: list[dict]


class Method:
    """One registered method. Subclass it in the method's module and list an instance in ``METHODS``.

    Attributes:
        name: The ``--model`` name, stored as ``model.kind``.
        summary: One line for ``--help`` and ``brainuad models --methods``.
        Options: The method's own settings (a frozen dataclass with an "Attributes:" docstring: the CLI makes one
            flag per field, named after it, so field names must be unique across methods).
        family: Methods of one family share recipes (``--recipe quick`` is the residual autoencoders').
        learns: Whether the method learns a reconstruction (the learned-nothing guard judges only these).
        uses_training_data: Whether the training scans shape the model (calibration refuses them when so).
        resumable: Whether ``train --resume`` and DDP can run it.
        refuses: Fields of :class:`ModelConfig` that must keep their defaults for this method (a config never
            claims a setting that does nothing).
        min_stages: Fewest ``channels`` (stride-2 stages) it takes; ``max_stages`` the most.
        downsamples: Whether every side of ``input_shape`` must divide by ``input_pool`` × 2 ** stages.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    family: ClassVar[str] = ""
    learns: ClassVar[bool] = True
    uses_training_data: ClassVar[bool] = True
    resumable: ClassVar[bool] = True
    refuses: ClassVar[tuple[str, ...]] = ("input_pool", "mean_skip")
    min_stages: ClassVar[int] = 4
    max_stages: ClassVar[int] = 4
    downsamples: ClassVar[bool] = True

    def build(self, config: ModelConfig) -> nn.Module:
        """The network ``config`` describes, randomly initialised (a plain ``nn.Module``)."""
        raise NotImplementedError

    def check(self, config: ModelConfig) -> None:
        """Refuse settings this method cannot honour (raises :class:`ConfigError` naming them)."""
        refused = [
            name for name in self.refuses if getattr(config, name) != ModelConfig.__dataclass_fields__[name].default
        ]
        if refused:
            raise ConfigError(f"model.{' and model.'.join(refused)}: not used by the {self.name!r} model")
        if not self.min_stages <= len(config.channels) <= self.max_stages:
            span = (
                f"{self.min_stages}"
                if self.min_stages == self.max_stages
                else f"{self.min_stages} to {self.max_stages}"
            )
            raise ConfigError(f"model.channels: the {self.name!r} model takes {span} values")
        factor = config.input_pool * 2 ** len(config.channels)
        if self.downsamples and [s for s in config.input_shape if s < factor or s % factor]:
            raise ConfigError(
                f"model.input_shape {config.input_shape}: every side must be a positive multiple of {factor} "
                f"(input_pool {config.input_pool} × {len(config.channels)} stride-2 stages); use a crop preset or "
                "pad the volume"
            )

    def prepare(self, model: nn.Module, volumes: Any, train_ids: list[int]) -> None:
        """Give the model what it takes from the training cohort before any step (``volumes``: ``(n, *shape)``
        cache rows, ``train_ids`` the training split's). Default: nothing."""

    def fit(self, model: nn.Module, context: FitContext) -> FitResult | None:
        """Train the model with the method's own loop; ``None`` (the default) = the default gradient loop."""
        return None


# The registry: methods found by name — every module of this package that lists Method instances in ``METHODS``,
# methods installed by other packages under the ``brainuad.models`` entry-point group, and methods register()-ed at
# run time (a plug-in, a test). It lives beside the contract it serves: ModelConfig's validation looks methods up,
# and a method is a Method, so one module holds both and nothing imports in a circle.

#: Modules of this package that are not methods.
_NOT_METHODS = {"base", "layers", "cohort", "anomalies"}
_METHODS: dict[str, Method] = {}
_LOADED = False
_LOADING = False


def _load() -> dict[str, Method]:
    global _LOADED, _LOADING
    if not _LOADED and not _LOADING:
        _LOADING = True  # a method module that looks a method up while it is imported must not recurse
        try:
            for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
                if info.name not in _NOT_METHODS:
                    for method in getattr(importlib.import_module(f"{__package__}.{info.name}"), "METHODS", ()):
                        register(method)
            _load_entry_points()
            _LOADED = True
        except BaseException:
            _METHODS.clear()  # nothing half-filled: the next lookup tries again and meets the same error
            raise
        finally:
            _LOADING = False
    return _METHODS


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    for entry in entry_points(group="brainuad.models"):
        for method in entry.load():
            register(method)


def register(method: Method) -> Method:
    """Add a method (its name must be new; its option fields must not clash with another method's).

    Raises:
        ValueError: A name already taken, or an option field another method declares differently.
    """
    if not method.name or (method.name in _METHODS and _METHODS[method.name] is not method):
        raise ValueError(f"model name {method.name!r} is empty or already registered")
    mine = _option_fields(method)
    for other in _METHODS.values():
        for name, declared in _option_fields(other).items():
            if name in mine and mine[name] != declared:
                raise ValueError(f"{method.name}: option {name!r} clashes with {other.name}'s (one CLI flag each)")
    _METHODS[method.name] = method
    return method


def _option_fields(method: Method) -> dict[str, tuple]:
    """Option name → (resolved type, default): one CLI flag serves every method declaring the same setting."""
    hints = typing.get_type_hints(method.Options)
    return {f.name: (hints[f.name], f.default) for f in dataclasses.fields(method.Options)}


def unregister(name: str) -> None:
    """Remove a method added with :func:`register` (tests)."""
    _METHODS.pop(name, None)


def get_method(name: str) -> Method:
    """The method registered as ``name``.

    Raises:
        ConfigError: No such method (the message lists the registered ones).
    """
    methods = _load()
    if name not in methods:
        raise ConfigError(f"model.kind {name!r} is not a registered model; known: {', '.join(sorted(methods))}")
    return methods[name]


def method_names() -> list[str]:
    """Every registered method's name, the package's in module order."""
    return list(_load())


def methods() -> list[Method]:
    """Every registered method."""
    return list(_load().values())
