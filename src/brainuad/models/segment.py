"""Self-supervised anomaly segmentation (``segment``): a 3D U-Net shown healthy scans with synthetic anomalies planted
in them predicts *where* they are — a soft label of how strongly each voxel was changed — so it cannot pass the
identity through, as a restoration or reconstruction model can.

The family of foreign-patch interpolation (Tan et al. 2020), Poisson image interpolation (Tan et al. 2021), NSA
(Schlüter et al. 2022) and "Many tasks make light work" (Baugh et al., MICCAI 2023): several visually distinct, generic
tasks (:data:`brainuad.models.anomalies.TASKS`: intensity or texture change, a foreign patch, a local deformation, a
gradient-domain blend), one of them **held out of training**: its average precision on held-out healthy scans picks
the best weights and stops training, so neither needs a real lesion.

Training fits the machine: random patches (``patch_size``) of the augmented training volumes, a GroupNorm U-Net (the
same statistics on a patch and on a whole volume), BCE + soft Dice on the brain's voxels. Inference is whole-volume
and fully convolutional. The anomaly map is the predicted score: the model's "reconstruction" is the scan minus that
score inside the brain, so |x − reconstruction| — the map every other method gives — is the score itself and
calibrate, detect and evaluate treat it like any model.

Contrast randomisation (``contrast_randomise``): each training volume's tissue classes (a 3-class Gaussian mixture of
its brain intensities, scikit-learn) get random intensities, a random partial-volume blur, bias field and noise
before any task is planted (SynthSeg-style, Billot et al. 2023), so one model sees every contrast.
"""

from __future__ import annotations

import itertools
import math
import resource
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from brainuad.errors import ConfigError
from brainuad.models.anomalies import TASKS, TaskSettings, plant_tasks
from brainuad.models.base import FitContext, FitResult, Method, ModelConfig, TrainingHooks


@dataclass(frozen=True)
class SegmentOptions:
    """Settings of the ``segment`` model.

    Attributes:
        patch_size: Training patch (voxels; each side a multiple of 2 ** stages, clipped to the volume).
        tasks: The synthetic tasks (:data:`brainuad.models.anomalies.TASKS`), the held-out one included.
        holdout_task: The task never trained on: its AP on the validation scans chooses the best weights.
        val_every_steps: Validate (held-out-task AP) every this many steps, and after the last.
        patience: Stop after this many validations without a better AP (0 = never stop early).
        time_budget_minutes: Stop (and validate) when this much wall time has passed (0 = none).
        contrast_randomise: Train on randomised contrasts of each scan's tissue classes (one model, any contrast).
        max_task_fraction: Largest synthetic anomaly, as a share of the brain in a patch.
    """

    patch_size: tuple[int, int, int] = (48, 48, 48)
    tasks: tuple[str, ...] = TASKS
    holdout_task: str = "poisson"
    val_every_steps: int = 25
    patience: int = 0
    time_budget_minutes: float = 0.0
    contrast_randomise: bool = False
    max_task_fraction: float = 0.15

    def __post_init__(self) -> None:
        unknown = [t for t in (*self.tasks, self.holdout_task) if t not in TASKS]
        if unknown:
            raise ConfigError(f"model.options.tasks: unknown task(s) {unknown}; known: {', '.join(TASKS)}")
        if self.holdout_task not in self.tasks or len(self.tasks) < 2:
            raise ConfigError(
                "model.options.holdout_task must be one of model.options.tasks, with one more to train on"
            )
        if len(self.patch_size) != 3 or min(self.patch_size) < 8:
            raise ConfigError("model.options.patch_size: three sides of at least 8 voxels")
        if self.val_every_steps < 1 or self.patience < 0 or self.time_budget_minutes < 0:
            raise ConfigError("model.options: val_every_steps >= 1, patience >= 0, time_budget_minutes >= 0")
        if not 0 < self.max_task_fraction < 1:
            raise ConfigError("model.options.max_task_fraction must be in (0, 1)")

    @property
    def training_tasks(self) -> tuple[str, ...]:
        """The tasks trained on: all but the held-out one."""
        return tuple(t for t in self.tasks if t != self.holdout_task)


def conv_act_norm(conv: nn.Module, channels: int, norm: str = "group") -> nn.Sequential:
    """Convolution, LeakyReLU(0.2), GroupNorm of up to 4 groups (at least two values per group even on a 1-voxel
    bottleneck; the statistics of a patch and of a whole volume agree, unlike BatchNorm's)."""
    return nn.Sequential(conv, nn.LeakyReLU(0.2, inplace=True), nn.GroupNorm(math.gcd(channels, 4), channels))


class SegmentationUNet3D(TrainingHooks, nn.Module):
    """A fully convolutional GroupNorm U-Net predicting an anomaly logit per voxel (any shape divisible by
    2 ** stages); ``forward`` (eval) returns the scan minus the predicted score inside the brain."""

    def __init__(self, config: ModelConfig, options: SegmentOptions | None = None):
        super().__init__()
        self.config = config
        self.options = options or SegmentOptions()
        widths = (config.stem_channels, *config.channels)
        self.stem = nn.Sequential(
            conv_act_norm(nn.Conv3d(1, widths[0], 3, padding=1), widths[0], "group"),
            conv_act_norm(nn.Conv3d(widths[0], widths[0], 3, padding=1), widths[0], "group"),
        )
        self.down = nn.ModuleList(
            nn.Sequential(
                conv_act_norm(nn.Conv3d(a, b, 3, stride=2, padding=1), b, "group"),
                conv_act_norm(nn.Conv3d(b, b, 3, padding=1), b, "group"),
            )
            for a, b in itertools.pairwise(widths)
        )
        rev = widths[::-1]
        self.up = nn.ModuleList(nn.ConvTranspose3d(a, b, 2, stride=2) for a, b in itertools.pairwise(rev))
        self.fuse = nn.ModuleList(
            nn.Sequential(
                conv_act_norm(nn.Conv3d(2 * b, b, 3, padding=1), b, "group"),
                conv_act_norm(nn.Conv3d(b, b, 3, padding=1), b, "group"),
            )
            for b in rev[1:]
        )
        self.head = nn.Conv3d(widths[0], 1, 1)
        # Anomalies are rare: an untrained model says "normal" (score ~0.05) everywhere, not 0.5. The weights start
        # small, not zero: a zero head passes no gradient back and the first ~20 steps are lost (measured).
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.constant_(self.head.bias, -3.0)
        self.stages = len(config.channels)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Anomaly logits, ``(batch, 1, *shape)``; every side of ``shape`` a multiple of 2 ** stages."""
        factor = 2**self.stages
        if x.dim() != 5 or x.shape[1] != 1 or any(s % factor for s in x.shape[2:]):
            raise ValueError(f"expected (batch, 1, *shape) with sides divisible by {factor}, got {tuple(x.shape)}")
        features = [self.stem(x)]
        for block in self.down:
            features.append(block(features[-1]))
        h = features.pop()
        for up, fuse in zip(self.up, self.fuse):
            h = fuse(torch.cat([up(h), features.pop()], dim=1))
        return self.head(h)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The anomaly score, 0…1, zero outside the brain (voxels > 0)."""
        return torch.sigmoid(self.logits(x).float()) * (x > 0).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The scan with what the model flags taken away: |x − forward(x)| is the score (see the module docstring).
        return x - self.score(x).to(x.dtype)

    @torch.no_grad()
    def self_check(self, x: torch.Tensor, brain: torch.Tensor, mean: torch.Tensor | None = None) -> dict:
        """The held-out task planted (a fixed seed) in held-out healthy scans: the model's AP on its voxels against
        the AP of |x − the cohort mean image| (what a model that learned nothing individual would give). The task is
        planted :data:`CHECK_REPEATS` times in each scan (each a new draw), so a verdict on a few scans rests on more
        than one anomaly each."""
        x, brain = x.repeat(CHECK_REPEATS, 1, 1, 1, 1), brain.repeat(CHECK_REPEATS, 1, 1, 1, 1)
        labels, corrupted = heldout_batch(x, self.options, seed=0)
        scores = torch.cat([self.score(corrupted[i : i + 1]) for i in range(len(corrupted))])
        ap = label_ap(scores, labels, brain)
        result = {"heldout_task": self.options.holdout_task, "heldout_ap": ap}
        if mean is not None:
            baseline = label_ap((corrupted - mean.to(corrupted)).abs(), labels, brain)
            result["heldout_ap_mean_image"] = baseline
            result["segments_planted_anomalies"] = (ap > baseline) if math.isfinite(ap) else None
        return result


#: Draws of the held-out task per validation scan in the final check (the verdict; validation during training plants
#: one per scan, to keep its cost per step low).
CHECK_REPEATS = 4


def heldout_batch(x: torch.Tensor, options: SegmentOptions, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out task planted in every scan of ``x`` (seeded; the caller's random state is left alone)."""
    settings = TaskSettings(fraction=1.0, max_brain_fraction=options.max_task_fraction)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        corrupted, labels = plant_tasks(x.float(), (options.holdout_task,), settings)
    return labels, corrupted


#: A voxel counts as anomalous for the held-out AP when its soft label is at least this (clearly changed), as normal
#: when it is 0; the faint rim in between counts as neither.
POSITIVE_LABEL = 0.3


def label_ap(scores: torch.Tensor, labels: torch.Tensor, brain: torch.Tensor) -> float:
    """Average precision of ``scores`` for the planted voxels (label >= :data:`POSITIVE_LABEL`) against the
    untouched brain voxels (label 0), pooled over the batch; NaN when nothing was planted."""
    from sklearn.metrics import average_precision_score

    brain = brain.bool()
    positive = (labels >= POSITIVE_LABEL) & brain
    negative = (labels == 0) & brain
    if not bool(positive.any()) or not bool(negative.any()):
        return math.nan
    s = torch.cat([scores[positive], scores[negative]]).float().cpu().numpy()
    y = np.r_[np.ones(int(positive.sum())), np.zeros(int(negative.sum()))]
    return float(average_precision_score(y, s))


def sample_patches(volumes: torch.Tensor, size: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    """One random patch per volume, centred on a random brain voxel (voxels > 0) and shifted to fit inside it; a
    side larger than the volume's is clipped to the volume (rounded down to a multiple of 8).

    Args:
        volumes: ``(batch, 1, *shape)``.
        size: Patch sides in voxels.
        generator: Draws the centres (a seeded generator: a run replays its patches).
    """
    shape = volumes.shape[2:]
    size = tuple(min(p, s - s % 8 if s >= 8 else s) for p, s in zip(size, shape))
    patches = []
    for b in range(volumes.shape[0]):
        inside = (volumes[b, 0] > 0).nonzero()
        if len(inside):
            centre = inside[int(torch.randint(len(inside), (), generator=generator))].tolist()
        else:
            centre = [s // 2 for s in shape]
        start = [min(max(0, c - p // 2), s - p) for c, p, s in zip(centre, size, shape)]
        patches.append(volumes[b, :, start[0] : start[0] + size[0], start[1] : start[1] + size[1],
                               start[2] : start[2] + size[2]])  # fmt: skip
    return torch.stack(patches)


def tissue_classes(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """Three tissue classes of a scan's brain (voxels > 0), darkest first, from a Gaussian mixture of its
    intensities (scikit-learn); 0 outside the brain, 1–3 inside."""
    from sklearn.mixture import GaussianMixture

    brain = image > 0
    values = image[brain].astype(np.float64)
    classes = np.zeros(image.shape, np.uint8)
    if values.size < 30:
        classes[brain] = 1
        return classes
    rng = np.random.default_rng(seed)
    sample = values[rng.choice(values.size, min(values.size, 20000), replace=False)]
    mixture = GaussianMixture(3, random_state=seed).fit(sample[:, None])
    order = np.argsort(mixture.means_[:, 0])
    rank = np.empty(3, np.uint8)
    rank[order] = np.arange(1, 4)
    classes[brain] = rank[mixture.predict(values[:, None])]
    return classes


def randomise_contrast(image: torch.Tensor, classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A new contrast of one scan: each tissue class a random mean intensity, the scan's own texture within the
    class kept at a random gain, a random partial-volume blur, a smooth bias field and noise; scaled like a
    preprocessed scan (0.5–99.5th brain percentiles to 0…1), zero outside the brain.

    Args:
        image: One preprocessed scan, 3D.
        classes: Its tissue classes (:func:`tissue_classes`), 3D, 0 outside the brain.
        generator: Draws everything (seeded).
    """

    def uniform(low: float, high: float) -> float:
        return float(low + (high - low) * torch.rand((), generator=generator))

    brain = classes > 0
    means = torch.rand(4, generator=generator)
    out = means[classes.long()]
    for c in (1, 2, 3):
        inside = classes == c
        if bool(inside.any()):
            own = image[inside]
            out[inside] += uniform(-1.5, 1.5) * (own - own.mean())
    from brainuad.models.anomalies import _gaussian_blur

    sigma = uniform(0.0, 1.0)  # partial volume: a normalised blur inside the brain (no dark rim at its border)
    out = _gaussian_blur(out * brain, sigma) / _gaussian_blur(brain.float(), sigma).clamp_min(1e-3) * brain
    coarse = torch.rand(1, 1, 4, 4, 4, generator=generator) * 2 - 1
    bias = F.interpolate(coarse, size=tuple(image.shape), mode="trilinear", align_corners=True)[0, 0]
    out = out * torch.exp(uniform(0.0, 0.3) * bias)
    out = out + uniform(0.0, 0.05) * torch.randn(out.shape, generator=generator)
    values = out[brain]
    if values.numel() < 2:
        return torch.zeros_like(image)
    low, high = torch.quantile(values[:: max(1, values.numel() // 100_000)], torch.tensor([0.005, 0.995]))
    scaled = ((out - low) / (high - low).clamp_min(1e-6)).clamp(0, 1)
    gamma = math.exp(uniform(-0.4, 0.4))
    return torch.where(brain, scaled.clamp_min(1e-3) ** gamma, torch.zeros_like(scaled))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


#: The weight of an anomalous voxel in the BCE: planted voxels are ~1–3 % of a patch's brain, and without it the
#: network first learns to say "normal" everywhere (measured: the score did not separate in 200 steps).
POSITIVE_WEIGHT = 10.0


def _loss(logits: torch.Tensor, labels: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
    """Weighted BCE on the brain's voxels + soft Dice of the planted region (both keep the rare planted voxels from
    vanishing under the many normal ones)."""
    weight = brain.float()
    positive = torch.tensor(POSITIVE_WEIGHT, device=logits.device)
    bce = (F.binary_cross_entropy_with_logits(logits, labels, reduction="none", pos_weight=positive) * weight).sum()
    bce = bce / weight.sum().clamp_min(1.0)
    p = torch.sigmoid(logits) * weight
    dice = 1 - (2 * (p * labels).sum() + 1) / (p.sum() + labels.sum() + 1)
    return bce + dice


class Segment(Method):
    name = "segment"
    summary = "3D U-Net segmenting synthetic anomalies planted in healthy scans, validated on a held-out task"
    Options = SegmentOptions
    resumable = False
    min_stages = 2
    max_stages = 4

    def build(self, config: ModelConfig) -> nn.Module:
        return SegmentationUNet3D(config, config.options)

    def check(self, config: ModelConfig) -> None:
        super().check(config)
        factor = 2 ** len(config.channels)
        if any(p % factor for p in config.options.patch_size):
            raise ConfigError(f"model.options.patch_size {config.options.patch_size}: sides must divide by {factor}")

    def fit(self, model: nn.Module, context: FitContext) -> FitResult:
        """Patches, the training tasks, BCE + Dice; the held-out task's AP on the validation scans every
        ``val_every_steps`` steps keeps the best weights and stops early; the curve (AP against CPU-seconds) goes
        to ``learning_curve.json``."""
        tc, options = context.config.training, model.options
        device = context.device
        total = tc.epochs * (tc.steps_per_epoch or max(1, math.ceil(len(context.train_ids) / tc.batch_size)))
        optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        settings = TaskSettings(max_brain_fraction=options.max_task_fraction)
        generator = torch.Generator().manual_seed(tc.seed)
        val = context.raw(context.val_ids) if context.val_ids else None
        val_labels, val_inputs = heldout_batch(val, options, seed=tc.seed + 1) if val is not None else (None, None)
        classes = self._classes(context) if options.contrast_randomise else None
        cpu0, wall0 = _cpu_seconds(), time.monotonic()
        deadlines = [wall0 + 60 * options.time_budget_minutes] if options.time_budget_minutes else []
        deadlines += [context.deadline] if context.deadline is not None else []
        deadline = min(deadlines) if deadlines else None  # the option's budget or the caller's, whichever ends first
        curve: list[dict] = []
        history: list[dict] = []
        best, best_step, stale, step, running, saved = -math.inf, 0, 0, 0, [], False
        stopped = "steps"
        for epoch in range(1, tc.epochs + 1):
            for ids in context.plan(tc.seed, epoch):
                if step >= total:
                    break
                if classes is not None:
                    # Randomised from the scans as they are (the classes are theirs; the randomisation brings its
                    # own blur, bias and noise), on the CPU where its generator lives, then moved to the device.
                    raw = context.raw(ids).float().cpu()
                    volumes = torch.stack([
                        randomise_contrast(raw[i, 0], classes[r], generator)[None] for i, r in enumerate(ids)
                    ]).to(device)  # fmt: skip
                else:
                    volumes = context.load(ids, epoch, step)
                patches = sample_patches(volumes.float(), options.patch_size, generator)
                torch.manual_seed(tc.seed * 1_000_003 + step)
                corrupted, labels = plant_tasks(patches, options.training_tasks, settings)
                lr = context.learning_rate(step, total)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                model.train()
                loss = _loss(model.logits(corrupted), labels, patches > 0)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running.append(loss.item())
                step += 1
                last = step >= total or (deadline is not None and time.monotonic() > deadline)
                if step % options.val_every_steps == 0 or last:
                    ap = self._validate(model, val_inputs, val_labels)
                    row = {"step": step, "cpu_seconds": round(_cpu_seconds() - cpu0, 1),
                           "wall_seconds": round(time.monotonic() - wall0, 1), "heldout_ap": ap,
                           "train_loss": float(np.mean(running))}  # fmt: skip
                    curve.append(row)
                    context.record("learning_curve.json", {"holdout_task": options.holdout_task, "points": curve})
                    # "seconds": since the previous row (summary.json's train_seconds sums them).
                    since = row["wall_seconds"] - (curve[-2]["wall_seconds"] if len(curve) > 1 else 0.0)
                    history.append({"epoch": step, "train_loss": row["train_loss"], "val_loss": 1 - ap,
                                    "seconds": round(since, 1), "volumes_per_s": step * tc.batch_size /
                                    max(row["wall_seconds"], 1e-6), "lr": lr})  # fmt: skip
                    context.log(history[-1])
                    running = []
                    context.save(model, "last.safetensors")
                    improved = math.isfinite(ap) and ap > best
                    if improved or not saved:  # the first validation always saves: a run never ends without weights
                        context.save(model, "model.safetensors")
                        saved = True
                    if improved:
                        best, best_step, stale = ap, step, 0
                    else:
                        stale += 1
                    if options.patience and stale >= options.patience:
                        stopped = "patience"
                        last = True
                    if deadline is not None and time.monotonic() > deadline:
                        stopped = "time budget"
                        last = True
                if last:
                    break
            if step >= total or stopped != "steps":
                break
        if not saved:  # no validation ran (no step at all): the initial weights, said so by the curve
            context.save(model, "model.safetensors")
        context.record("learning_curve.json", {"holdout_task": options.holdout_task, "points": curve,
                                                "best_step": best_step, "best_heldout_ap": best,
                                                "stopped_by": stopped})  # fmt: skip
        return FitResult(epochs=step, best_val_loss=1 - best, best_epoch=best_step, history=history)

    @staticmethod
    def _classes(context: FitContext) -> dict[int, torch.Tensor]:
        """Tissue classes of every training scan (un-augmented), by cache row."""
        out = {}
        for row in context.train_ids:
            image = context.raw([row])[0, 0].float().cpu().numpy()
            out[row] = torch.from_numpy(tissue_classes(image, seed=row))
        return out

    @staticmethod
    @torch.no_grad()
    def _validate(model: SegmentationUNet3D, inputs: torch.Tensor | None, labels: torch.Tensor | None) -> float:
        if inputs is None:
            return math.nan
        model.eval()
        scores = torch.cat([model.score(inputs[i : i + 1].float()) for i in range(len(inputs))])
        return label_ap(scores, labels, inputs > 0)


METHODS = [Segment()]
