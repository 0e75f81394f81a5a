import dataclasses

import numpy as np
import pytest
import torch

from brainuad.data.augmentation import Augmenter, Draw, MonaiAugmenter
from brainuad.seeds import batch_seed

SHAPE = (40, 48, 24)


def brain_volume(shape=SHAPE) -> torch.Tensor:
    """A smooth ellipsoidal 'brain' in [0, 1] with zero background, (1, D, H, W)."""
    coords = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    brain = (coords[0] ** 2 / 0.7 + coords[1] ** 2 / 0.8 + coords[2] ** 2 / 0.7) < 1
    image = np.where(brain, 0.45 + 0.25 * np.cos(3 * coords[0]) * np.sin(2 * coords[1]), 0.0)
    return torch.tensor(image, dtype=torch.float32)[None]


def ramps(shape=SHAPE) -> torch.Tensor:
    """Three channels holding each voxel's index along axes 0, 1, 2 (plus 10, so no value is ~0)."""
    return torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) + 10 for s in shape], indexing="ij"))


def interior_displacement(moved: torch.Tensor, margin: int = 8) -> float:
    """RMS displacement (voxels) where the sampled position stayed inside the volume."""
    crop = (slice(None), *[slice(margin, s - margin) for s in moved.shape[1:]])
    return float(((moved - ramps(moved.shape[1:]))[crop] ** 2).sum(0).mean().sqrt())


def test_batch_is_seeded_per_volume_and_keeps_background_zero():
    augmenter = Augmenter()
    volume = brain_volume()
    batch = volume[None].repeat(4, 1, 1, 1, 1)
    seeds = [batch_seed(0, 1, 2, i, i) for i in range(4)]
    out = augmenter(batch, seeds)
    assert torch.equal(out, augmenter(batch, seeds))
    # A volume's result depends on its seed only, not on the batch it came in.
    assert torch.equal(out[2:3], augmenter(batch[2:3], seeds[2:3]))
    assert not torch.equal(out[0], out[1])
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    untouched = Draw.from_seed(seeds[0])
    untouched = dataclasses.replace(untouched, affine=False, elastic=False)
    plain = augmenter.augment_volume(volume, untouched)
    assert torch.equal(plain[volume == 0], torch.zeros_like(plain[volume == 0]))
    with pytest.raises(ValueError, match="seeds"):
        augmenter(batch, seeds[:2])


def test_spatial_statistics_match_monai():
    from monai.transforms import Rand3DElastic

    augmenter = Augmenter()
    reference = MonaiAugmenter()
    seeds = range(40)
    ours, theirs = [], []
    for seed in seeds:
        draw = dataclasses.replace(Draw.from_seed(seed), elastic=False)
        ours.append(interior_displacement(augmenter.spatial(ramps(), draw)) if draw.affine else 0.0)
        reference.spatial.set_random_state(seed=seed)
        theirs.append(interior_displacement(torch.as_tensor(reference.spatial.transforms[0](ramps()))))
    # Affine: same share of moved volumes and the same displacement scale (a few voxels).
    assert np.mean(ours) == pytest.approx(np.mean(theirs), rel=0.2)
    assert np.mean(np.array(ours) > 0) == pytest.approx(np.mean(np.array(theirs) > 0), abs=0.2)

    elastic = Rand3DElastic(prob=1.0, sigma_range=(6, 8), magnitude_range=(40, 80), padding_mode="zeros")
    ours, theirs = [], []
    for seed in range(12):
        draw = dataclasses.replace(Draw.from_seed(seed), affine=False, elastic=True)
        ours.append(interior_displacement(augmenter.spatial(ramps(), draw)))
        elastic.set_random_state(seed=seed)
        theirs.append(interior_displacement(torch.as_tensor(elastic(ramps()))))
    # Elastic: sub-voxel displacements of the same size (MONAI's are ~0.3 voxels RMS at these settings).
    assert 0.1 < np.mean(theirs) < 1.0
    assert np.mean(ours) == pytest.approx(np.mean(theirs), rel=0.25)


def test_intensity_statistics_match_monai():
    augmenter = Augmenter()
    reference = MonaiAugmenter()
    volume = brain_volume()
    brain = volume > 0
    ours, theirs = [], []
    for seed in range(300):
        out = augmenter.intensity(volume, Draw.from_seed(seed))
        reference.intensity.set_random_state(seed=seed)
        ref = torch.as_tensor(reference.intensity(volume)).float().clamp(0, 1) * brain
        for result, store in ((out, ours), (ref, theirs)):
            ratio = float(result[brain].mean() / volume[brain].mean())
            change = float((result - volume)[brain].std())
            store.append((ratio, change))
    ours_a, theirs_a = np.array(ours), np.array(theirs)
    # Mean-intensity change: same centre and spread; voxel-wise change: same typical size.
    assert ours_a[:, 0].mean() == pytest.approx(theirs_a[:, 0].mean(), abs=0.04)
    assert ours_a[:, 0].std() == pytest.approx(theirs_a[:, 0].std(), rel=0.2)
    assert ours_a[:, 1].mean() == pytest.approx(theirs_a[:, 1].mean(), rel=0.2)
    assert np.all(ours_a >= 0) and ours_a[:, 0].std() > 0.05
