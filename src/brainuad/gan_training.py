"""f-AnoGAN's two-stage training (Schlegl et al. 2019), in the same run folder layout as every other model.

Stage 1 (``training.epochs`` epochs): WGAN-GP — the critic takes :data:`CRITIC_STEPS` steps per generator step, with
gradient penalty weight :data:`GP_WEIGHT`, Adam (lr, betas 0.5/0.9). Stage 2 (``training.epochs`` epochs): the
encoder learns to invert the frozen generator with the izi_f loss ``MSE(x, G(E(x))) + κ·MSE(f(x), f(G(E(x))))``,
where f are the frozen critic's features (κ = :data:`FEATURE_WEIGHT`). The best weights by validation
reconstruction error (stage 2) are ``model.safetensors``; ``log.csv`` numbers stage 2's epochs after stage 1's.
Each step is seeded from (seed, stage, epoch, step), but f-AnoGAN runs are not resumable: restart them.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import nn

from brainuad.augmentation import Augmenter, batch_seed
from brainuad.checkpoints import save_weights
from brainuad.config import Config
from brainuad.data import VolumeCache
from brainuad.io import write_json

CRITIC_STEPS = 5
GP_WEIGHT = 10.0
FEATURE_WEIGHT = 1.0


def gradient_penalty(model: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: (‖∇D(x̃)‖ − 1)² at random points x̃ between real and generated volumes."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, 1, device=real.device)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    score = model.critique(mixed)
    (grad,) = torch.autograd.grad(score.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def train_fanogan(
    model: nn.Module,
    cache: VolumeCache,
    train_ids: list[int],
    val_ids: list[int],
    config: Config,
    run_dir: Path,
    device: torch.device,
    augmenter: Augmenter | None,
    progress: bool = True,
) -> dict:
    """Run both stages; returns the training state (epochs done, best validation loss and epoch) and history."""
    from tqdm import tqdm

    from brainuad.batches import plan_batches as _batches
    from brainuad.training import _append_log, _load_batch, evaluate_loss

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
            batches = _batches(train_ids, tc.batch_size, tc.seed + 7919 * stage, epoch, 0, 1, tc.steps_per_epoch)
            for step, ids in enumerate(batches):
                real = _load_batch(cache, ids, augmenter, tc.seed, epoch + 1000 * stage, step, device)
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
            val_loss = evaluate_loss(model, cache, val_ids, device, tc.batch_size) if stage == 2 else math.nan
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
                save_weights(model, run_dir / "model.safetensors")
            save_weights(model, run_dir / "last.safetensors")
            state["epoch"] = index
            _append_log(run_dir / "log.csv", row)
            bar.set_postfix(stage=stage, loss=f"{row['train_loss']:.4f}")
            bar.update(1)
    bar.close()
    write_json(run_dir / "stage.json", {"stage_1_epochs": tc.epochs, "stage_2_epochs": tc.epochs})
    return {"state": state, "history": history}
