import pytest
import torch

from brainuad.config import ModelConfig
from brainuad.errors import ConfigError
from brainuad.models import build_model, count_parameters

TINY = {"stem_channels": 4, "channels": (4, 8, 8, 8), "latent": 16, "input_shape": (32, 32, 16)}


def meta_count(**kwargs) -> int:
    with torch.device("meta"):
        return count_parameters(build_model(ModelConfig(**kwargs)))


def test_paper_preset_parameter_count():
    # Luo et al.: about 198 M parameters, about 189 M of them in the two fully connected layers.
    total = meta_count()
    assert total == 199_793_729
    flat = 256 * 10 * 12 * 6
    fully_connected = 2 * flat * 512 + 512 + flat
    assert fully_connected == 188_928_512
    assert abs(total - 198e6) / 198e6 < 0.01


@pytest.mark.parametrize("latent", [128, 256, 512, 1024])
def test_dense_variants(latent):
    flat = 256 * 10 * 12 * 6
    conv_part = meta_count(latent=512) - (2 * flat * 512 + 512 + flat)
    assert meta_count(latent=latent) == conv_part + 2 * flat * latent + latent + flat


@pytest.mark.parametrize("channels", [1, 2, 4, 8, 16, 32, 64])
def test_spatial_variants(channels):
    model = build_model(ModelConfig(kind="spatial-ae", spatial_channels=channels, **{**TINY, "latent": 1}))
    x = torch.rand(2, 1, 32, 32, 16)
    z = model.encode(x)
    assert z.shape == (2, channels, 2, 2, 1)
    assert model(x).shape == x.shape
    full = meta_count(kind="spatial-ae", spatial_channels=channels)
    assert full < 12e6  # no fully connected layers: the spatial variants are small


@pytest.mark.parametrize("shape", [(32, 32, 16), (48, 32, 64), (160 // 5, 208 // 13, 160 // 10)])
def test_any_shape_divisible_by_16(shape):
    model = build_model(ModelConfig(**{**TINY, "input_shape": shape}))
    x = torch.rand(1, 1, *shape)
    assert model(x).shape == x.shape
    assert model.encode(x).shape == (1, 16)


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ConfigError, match="multiple of 16"):
        ModelConfig(input_shape=(160, 192, 90))
    model = build_model(ModelConfig(**TINY))
    with pytest.raises(ValueError, match="expected input of shape"):
        model(torch.rand(1, 1, 32, 32, 32))


def test_eval_mode_output_does_not_depend_on_the_batch():
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY))
    model.train()
    for _ in range(3):  # give BatchNorm non-trivial running statistics
        model(torch.rand(4, 1, 32, 32, 16))
    model.eval()
    a, b = torch.rand(1, 1, 32, 32, 16), torch.rand(1, 1, 32, 32, 16) * 3
    with torch.no_grad():
        alone = model(a)
        together = model(torch.cat([a, b]))[:1]
    torch.testing.assert_close(alone, together)


def test_tiny_model_overfits_one_volume():
    torch.manual_seed(0)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, s) for s in (32, 32, 16)], indexing="ij"))
    volume = ((grid**2).sum(0) < 0.6).float() * (0.5 + 0.5 * torch.sin(3 * grid[0]))
    volume = volume[None, None]
    model = build_model(ModelConfig(**TINY))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(150):
        loss = torch.nn.functional.mse_loss(model(volume), volume)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


@pytest.mark.parametrize("kind", ["vae", "dae", "intensity"])
def test_baselines_share_the_interface(kind):
    model = build_model(ModelConfig(kind=kind, **TINY))
    x = torch.rand(2, 1, 32, 32, 16)
    model.train()
    assert model(model.training_input(x)).shape == x.shape
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == x.shape
    if kind == "intensity":
        assert count_parameters(model) == 0 and not out.any()  # residual = the image itself


def test_vae_samples_in_training_and_uses_the_mean_in_eval():
    model = build_model(ModelConfig(kind="vae", **TINY))
    x = torch.rand(1, 1, 32, 32, 16)
    model.train()
    model(x)
    kl = model.regulariser()
    assert kl is not None and kl.item() >= 0 and model.regulariser() is None  # consumed once
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # deterministic: decodes the posterior mean


def test_dae_noise_is_coarse_and_stays_in_the_foreground():
    model = build_model(ModelConfig(kind="dae", options={"noise_std": 0.2, "noise_scale": 8}, **TINY))
    x = torch.zeros(1, 1, 32, 32, 16)
    x[..., 8:24, 8:24, 4:12] = 0.5
    noisy = model.training_input(x)
    noise = noisy - x
    assert torch.all(noise[x == 0] == 0)
    inside = noise[0, 0, 8:24, 8:24, 4:12]
    assert 0.02 < inside.std().item() < 0.4
    # Coarse: neighbouring voxels are strongly correlated.
    assert torch.corrcoef(torch.stack([inside[:-1].flatten(), inside[1:].flatten()]))[0, 1] > 0.9


def test_fanogan_parts_and_gradient_penalty():
    from brainuad.models.fanogan import gradient_penalty

    model = build_model(ModelConfig(kind="fanogan", **TINY))
    x = torch.rand(2, 1, 32, 32, 16)
    assert model.generate(torch.randn(2, 16)).shape == x.shape
    assert model.critique(x).shape == (2,)
    assert model(x).shape == x.shape
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in model.critic.modules())  # WGAN-GP: no BatchNorm
    penalty = gradient_penalty(model, x, torch.rand_like(x))
    assert penalty.item() >= 0 and penalty.requires_grad
