"""The synthetic-anomaly generator of the ``restore`` model: sizes, intensity ranges, brain only, clean volumes."""

import math

import pytest
import torch

from brainuad.models.anomalies import AnomalySettings, plant_anomalies, shape_mask

SHAPE = (40, 48, 24)


def _brain_batch(n=4):
    grid = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    brain = (grid[0] ** 2 / 0.7 + grid[1] ** 2 / 0.8 + grid[2] ** 2 / 0.7) < 1
    # Distinct scans (the "patch" content takes another scan of the batch), smooth tissue contrast inside the brain.
    volumes = [torch.where(brain, 0.35 + 0.1 * i + 0.2 * torch.cos(5 * grid[0] + i), torch.zeros(())) for i in range(n)]
    return torch.stack(volumes)[:, None].float(), brain


@pytest.mark.parametrize("kind", ["ellipsoid", "blob"])
@pytest.mark.parametrize("voxels", [4, 60, 900])
def test_shapes_have_the_stated_size_and_stay_in_the_brain(kind, voxels):
    torch.manual_seed(1)
    _, brain = _brain_batch(1)
    sizes = []
    for _ in range(12):
        mask, box = shape_mask(brain, voxels, kind, soft=False)
        assert not bool(((mask > 0) & ~brain[box]).any())
        sizes.append(float(mask.sum()))
    median = sorted(sizes)[len(sizes) // 2]
    # Deformed borders and the discrete grid spread single draws; the median stays near the target volume.
    assert voxels / 3 <= median <= voxels * 3, (kind, voxels, sizes)


def test_planted_anomalies_stay_in_the_brain_with_the_stated_sizes_and_strengths():
    torch.manual_seed(0)
    x, brain = _brain_batch()
    settings = AnomalySettings(fraction=1.0, max_count=3, max_brain_fraction=0.08)
    brain_voxels = int(brain.sum())
    changed_any, brighter, darker = False, False, False
    for _ in range(10):
        out, weights = plant_anomalies(x, settings)
        assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
        assert torch.equal(out[:, :, ~brain], x[:, :, ~brain])  # nothing outside the brain
        assert not bool((weights[:, 0] > 0)[:, ~brain].any())
        assert float(weights.max()) <= 1
        for b in range(x.shape[0]):
            planted = int((weights[b, 0] > 0).sum())
            # At most 3 anomalies, each at most 8 % of the brain (a soft border adds a shell of one voxel).
            assert planted <= 3 * 0.08 * brain_voxels * 1.6
            assert planted >= 1  # fraction 1: every volume gets at least one
        difference = out - x
        changed_any |= bool((difference.abs() > 0.05).any())
        brighter |= bool((difference > 0.05).any())
        darker |= bool((difference < -0.05).any())
    assert changed_any and brighter and darker


def test_some_volumes_stay_clean_and_draws_are_seeded():
    x, _ = _brain_batch(8)
    torch.manual_seed(3)
    out, weights = plant_anomalies(x, AnomalySettings(fraction=0.5))
    clean = [b for b in range(8) if float(weights[b].max()) == 0]
    assert 0 < len(clean) < 8
    assert all(torch.equal(out[b], x[b]) for b in clean)
    torch.manual_seed(3)
    again, _ = plant_anomalies(x, AnomalySettings(fraction=0.5))
    assert torch.equal(out, again)


def test_anomaly_sizes_span_a_few_voxels_to_the_largest_share():
    torch.manual_seed(5)
    x, brain = _brain_batch(1)
    settings = AnomalySettings(fraction=1.0, max_count=1, max_brain_fraction=0.08)
    sizes = [int((plant_anomalies(x, settings)[1] > 0).sum()) for _ in range(40)]
    assert min(sizes) <= 40 and max(sizes) >= 0.02 * int(brain.sum())
    assert math.isfinite(sum(sizes))
