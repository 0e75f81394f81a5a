"""A trained run as one object: its config, its network (weights checked against the config), its calibration and
its learned-nothing verdict, loaded once by :meth:`TrainedModel.load` from a run folder or ``builtin:NAME``.

Detect, evaluate, calibrate, ablate and the demo load runs through it, and :meth:`TrainedModel.threshold` is the one
place an operating threshold is decided: the value given (tuned or typed), else the calibrated one, else an error
saying how to get one.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from brainuad.config import Config
from brainuad.errors import BrainuadError, InputError
from brainuad.infer.calibration import CALIBRATION_FILE, Calibration, read_calibration, read_residual_spread
from brainuad.infer.inference import Analysis, Detection, analyse_case, segment_analysis
from brainuad.preprocess.cases import PreprocessedCase

WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class TrainedModel:
    """A loaded run.

    Attributes:
        run_dir: The run folder (for ``builtin:NAME``, the installed folder).
        config: The run's validated config.
        model: The network in eval mode on ``device`` (float32).
        device: Where the network runs.
        calibration: The run's validated calibration, ``None`` if it was never calibrated.
        builtin: Whether it is a shipped model (read-only: never calibrated in place).
        spread: The healthy voxel-wise spread that divides every anomaly map, when the calibration has one.
    """

    run_dir: Path
    config: Config
    model: nn.Module
    device: torch.device
    calibration: Calibration | None
    builtin: bool = False
    spread: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def load(cls, spec: str | Path, device: str | torch.device = "auto", calibration: bool = True) -> TrainedModel:
        """Load a run folder or ``builtin:NAME``: config, weights and calibration, each validated.

        Args:
            spec: Run folder or ``builtin:NAME``.
            device: ``auto``, ``cpu``, ``cuda`` or a :class:`torch.device`.
            calibration: Read ``calibration.json``; ``False`` leaves it unread (``None``), so that a run whose
                calibration is broken can be calibrated again.

        Raises:
            InputError: A missing folder or file, an invalid config or calibration, weights that do not fit the
                config (each naming the file).
        """
        from brainuad.io.shipped import is_builtin, resolve_model_dir
        from brainuad.train.checkpoints import load_model
        from brainuad.train.device import resolve_device

        torch_device = resolve_device(device)
        run_dir = resolve_model_dir(spec)
        model, config = load_model(run_dir, device=torch_device)
        fitted = read_calibration(run_dir) if calibration else None
        spread = read_residual_spread(run_dir, fitted, tuple(config.model.input_shape))
        return cls(run_dir, config, model, torch_device, fitted, is_builtin(spec), spread)

    @functools.cached_property
    def weights_sha256(self) -> str:
        """SHA-256 of the weights file (recorded with every result, so a re-run knows the model changed)."""
        from brainuad.io.provenance import sha256_file

        return sha256_file(self.run_dir / WEIGHTS_FILE)

    @functools.cached_property
    def calibration_sha256(self) -> str | None:
        """SHA-256 of ``calibration.json`` (``None`` when the model was never calibrated)."""
        from brainuad.io.provenance import sha256_file

        path = self.run_dir / CALIBRATION_FILE
        return sha256_file(path) if path.is_file() else None

    @functools.cached_property
    def identity(self) -> str:
        """The model's identity hash: SHA-256 over its weights' and its calibration's hashes (one model, one
        operating point)."""
        import hashlib

        return hashlib.sha256(f"{self.weights_sha256}:{self.calibration_sha256 or ''}".encode()).hexdigest()

    def name(self, base: str | Path) -> str:
        """How records name the model, with no absolute path: ``builtin:NAME@VERSION+SHA`` for a shipped model (SHA:
        the first 12 digits of :attr:`identity`), else the run folder relative to the folder ``base`` that holds
        the record."""
        if self.builtin:
            from brainuad import __version__

            return f"builtin:{self.run_dir.name}@{__version__}+{self.identity[:12]}"
        from brainuad.io.portable import relative_path

        return relative_path(self.run_dir, base)

    @functools.cached_property
    def reconstruction_check(self) -> dict | None:
        """The learned-nothing check recorded at the end of training (``summary.json``), if any."""
        from brainuad.train.guard import read_check

        return read_check(self.run_dir, strict=False)

    @property
    def banner(self) -> str | None:
        """One line for the terminal and tables when the model does not beat the cohort mean image, else ``None``."""
        from brainuad.train.guard import banner_text

        return banner_text(self.reconstruction_check)

    @property
    def report_warning(self) -> str | None:
        """The same verdict, worded for a findings or demo report, else ``None``."""
        from brainuad.train.guard import report_warning

        return report_warning(self.reconstruction_check)

    def threshold(self, given: float | None = None, source: str = "given", otherwise: str = "") -> tuple[float, str]:
        """The operating threshold and where it comes from: ``given`` (described by ``source``), else the calibrated
        one.

        Args:
            given: A threshold chosen elsewhere (typed by the user, tuned on labelled cases); ``None`` = calibrated.
            source: Where ``given`` comes from, in words.
            otherwise: The other way to get a threshold, for the error (e.g. ``"pass --threshold VALUE"``).

        Raises:
            BrainuadError: ``given`` is not a finite number, or none is given and the model was never calibrated.
        """
        if given is not None:
            given = float(given)
            if not math.isfinite(given):
                raise BrainuadError(f"the threshold must be a finite number, got {given}")
            return given, source
        if self.calibration is None:
            hint = f"run 'brainuad calibrate' on the model{f' or {otherwise}' if otherwise else ''}"
            raise BrainuadError(f"{self.run_dir}: no threshold: the model is not calibrated; {hint}")
        return self.calibration.threshold, self.calibration.source

    def extent(self, threshold: float) -> float | None:
        """The hysteresis extent level that goes with ``threshold``: the calibration's, when ``threshold`` is the
        calibrated one (the default operating point); ``None`` for any other threshold (typed or tuned elsewhere:
        its own level, with no extent chosen for it)."""
        calibration = self.calibration
        if calibration is None or calibration.extent_threshold is None or threshold != calibration.threshold:
            return None
        return calibration.extent_threshold

    def check_case(self, case: PreprocessedCase, where: str | Path) -> None:
        """Refuse a preprocessed case on another crop grid than the model's (``where`` names it in the error)."""
        expected = self.config.model.input_shape
        if case.grid.shape != tuple(expected):
            raise InputError(where, f"crop {case.grid.shape} does not match the model's {expected}")

    def analyse(self, case: PreprocessedCase) -> Analysis:
        """Reconstruction, anomaly map and slice scores of a preprocessed case, with the run's post-processing and
        healthy references (:func:`brainuad.infer.inference.analyse_case`)."""
        return analyse_case(self.model, case, self.calibration, self.device, self.config.postprocessing, self.spread)

    def detect(self, case: PreprocessedCase, threshold: float) -> Detection:
        """:meth:`analyse`, then the segmentation at ``threshold`` (from :meth:`threshold`), delineated by the
        calibration's extent level when ``threshold`` is the calibrated one (:meth:`extent`)."""
        return segment_analysis(self.analyse(case), threshold, self.extent(threshold))
