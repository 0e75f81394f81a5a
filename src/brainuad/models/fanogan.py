"""f-AnoGAN (Schlegl et al., Medical Image Analysis 2019) adapted to 3D, as the paper's Table 3 compares it.

Three networks: a generator G(z) (the autoencoder's decoder), a critic D(x) trained with WGAN-GP (no BatchNorm, as
the gradient penalty requires), and an encoder E(x) trained afterwards with G and D frozen (the "izi_f" loss:
image residual plus the residual of the critic's features). The reconstruction is G(E(x)); ``forward`` returns it,
so calibration, detection and evaluation treat f-AnoGAN like any other model.

Training (:meth:`FAnoGAN.fit`) is two-stage. Stage 1 (``training.epochs`` epochs): WGAN-GP — the critic takes
:data:`CRITIC_STEPS` steps per generator step, with gradient penalty weight :data:`GP_WEIGHT`, Adam (lr, betas
0.5/0.9). Stage 2 (``training.epochs`` epochs): the encoder learns to invert the frozen generator with the izi_f loss
``MSE(x, G(E(x))) + κ·MSE(f(x), f(G(E(x))))``, where f are the frozen critic's features (κ = :data:`FEATURE_WEIGHT`).
The best weights by validation reconstruction error (stage 2) are ``model.safetensors``; ``log.csv`` numbers stage
2's epochs after stage 1's. Each step is seeded from (seed, stage, epoch, step), but f-AnoGAN runs are not
resumable: restart them.
"""

from __future__ import annotations

import itertools
import math
import time

import torch
from torch import nn

from brainuad.models.base import FitContext, FitResult, Method, ModelConfig, TrainingHooks
from brainuad.models.layers import ResidualDown, ResidualUp, conv_act_norm

CRITIC_STEPS = 5
GP_WEIGHT = 10.0
FEATURE_WEIGHT = 1.0


class _CriticBlock(nn.Module):
    """Down-sampling residual block without normalisation (WGAN-GP's critic must not use BatchNorm)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv3d(out_channels, out_channels, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        )
        self.shortcut = nn.Conv3d(in_channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)


class FAnoGAN3D(TrainingHooks, nn.Module):
    """Generator, critic and encoder; ``forward(x)`` = G(E(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        channels = (config.stem_channels, *config.channels)
        self.bottleneck_shape = tuple(s // 16 for s in config.input_shape)
        flat = channels[-1] * math.prod(self.bottleneck_shape)
        reversed_channels = channels[::-1]
        self.generator = nn.ModuleDict(
            {
                "from_latent": nn.Linear(config.latent, flat),
                "decoder": nn.Sequential(*[ResidualUp(a, b) for a, b in itertools.pairwise(reversed_channels)]),
                "head": nn.Conv3d(config.stem_channels, 1, 1),
            }
        )
        self.critic = nn.ModuleDict(
            {
                "features": nn.Sequential(
                    nn.Conv3d(1, config.stem_channels, 3, padding=1),
                    nn.LeakyReLU(0.2),
                    *[_CriticBlock(a, b) for a, b in itertools.pairwise(channels)],
                ),
                "score": nn.Linear(flat, 1),
            }
        )
        self.encoder = nn.ModuleDict(
            {
                "features": nn.Sequential(
                    conv_act_norm(nn.Conv3d(1, config.stem_channels, 3, padding=1), config.stem_channels),
                    *[ResidualDown(a, b) for a, b in itertools.pairwise(channels)],
                ),
                "to_latent": nn.Linear(flat, config.latent),
            }
        )

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """G(z): latent codes → volumes."""
        features = self.generator["from_latent"](z).view(z.shape[0], -1, *self.bottleneck_shape)
        return self.generator["head"](self.generator["decoder"](features))

    def critic_features(self, x: torch.Tensor) -> torch.Tensor:
        """f(x): the critic's last feature map, flattened (used by the izi_f loss)."""
        return self.critic["features"](x).flatten(1)

    def critique(self, x: torch.Tensor) -> torch.Tensor:
        """D(x): the Wasserstein critic's score, one per volume."""
        return self.critic["score"](self.critic_features(x)).squeeze(1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E(x): volumes → latent codes."""
        expected = (1, *self.config.input_shape)
        if x.dim() != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected input of shape (batch, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        return self.encoder["to_latent"](self.encoder["features"](x).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generate(self.encode(x))


def gradient_penalty(model: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: (‖∇D(x̃)‖ − 1)² at random points x̃ between real and generated volumes."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, 1, device=real.device)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    score = model.critique(mixed)
    (grad,) = torch.autograd.grad(score.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


class FAnoGAN(Method):
    name = "fanogan"
    summary = "f-AnoGAN in 3D: two-stage WGAN-GP, then an encoder (Schlegl et al.)"
    resumable = False

    def build(self, config: ModelConfig) -> nn.Module:
        return FAnoGAN3D(config)

    def fit(self, model: nn.Module, context: FitContext) -> FitResult:
        """Both stages (one device, not resumable)."""
        from tqdm import tqdm

        from brainuad.seeds import batch_seed

        config, device, progress = context.config, context.device, context.progress
        tc = config.training
        latent = config.model.latent
        adam = {"lr": tc.lr, "betas": (0.5, 0.9), "weight_decay": tc.weight_decay}
        optim_g = torch.optim.Adam(model.generator.parameters(), **adam)
        optim_d = torch.optim.Adam(model.critic.parameters(), **adam)
        optim_e = torch.optim.Adam(model.encoder.parameters(), **adam)
        state = {"epoch": 0, "best_val_loss": math.inf, "best_epoch": 0}
        history: list[dict] = []
        bar = tqdm(total=2 * tc.epochs, desc="train f-AnoGAN", unit="epoch", disable=not progress)
        for stage in (1, 2):
            if stage == 2:  # G and D are frozen while the encoder learns to invert G
                for parameter in [*model.generator.parameters(), *model.critic.parameters()]:
                    parameter.requires_grad_(False)
            for epoch in range(1, tc.epochs + 1):
                start = time.perf_counter()
                model.train()
                losses = []
                batches = context.plan(tc.seed + 7919 * stage, epoch)
                for step, ids in enumerate(batches):
                    real = context.load(ids, epoch + 1000 * stage, step)
                    torch.manual_seed(batch_seed(tc.seed, stage, epoch, step))
                    if stage == 1:
                        z = torch.randn(real.shape[0], latent, device=device)
                        fake = model.generate(z).detach()
                        loss = model.critique(fake).mean() - model.critique(real).mean()
                        loss = loss + GP_WEIGHT * gradient_penalty(model, real, fake)
                        optim_d.zero_grad(set_to_none=True)
                        loss.backward()
                        optim_d.step()
                        if step % CRITIC_STEPS == CRITIC_STEPS - 1 or len(batches) < CRITIC_STEPS:
                            generator_loss = -model.critique(model.generate(torch.randn_like(z))).mean()
                            optim_g.zero_grad(set_to_none=True)
                            generator_loss.backward()
                            optim_g.step()
                    else:
                        model.generator.eval()  # frozen: BatchNorm statistics stay those of stage 1
                        reconstruction = model(real)
                        loss = nn.functional.mse_loss(reconstruction, real) + FEATURE_WEIGHT * nn.functional.mse_loss(
                            model.critic_features(reconstruction), model.critic_features(real).detach()
                        )
                        optim_e.zero_grad(set_to_none=True)
                        loss.backward()
                        optim_e.step()
                    losses.append(float(loss.detach()))
                val_loss = context.validation_loss(model) if stage == 2 else math.nan
                index = epoch + (stage - 1) * tc.epochs
                row = {
                    "epoch": index,
                    "train_loss": sum(losses) / max(1, len(losses)),
                    "val_loss": val_loss,
                    "seconds": round(time.perf_counter() - start, 3),
                    "volumes_per_s": round(sum(map(len, batches)) / (time.perf_counter() - start), 3),
                    "lr": tc.lr,
                }
                history.append(row)
                if stage == 2 and val_loss < state["best_val_loss"]:
                    state.update(best_val_loss=val_loss, best_epoch=index)
                    context.save(model, "model.safetensors")
                context.save(model, "last.safetensors")
                state["epoch"] = index
                context.log(row)
                bar.set_postfix(stage=stage, loss=f"{row['train_loss']:.4f}")
                bar.update(1)
        bar.close()
        context.record("stage.json", {"stage_1_epochs": tc.epochs, "stage_2_epochs": tc.epochs})
        return FitResult(state["epoch"], state["best_val_loss"], state["best_epoch"], history)


METHODS = [FAnoGAN()]
