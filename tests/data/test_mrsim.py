"""MR simulation from tissue labels: contrast physics, tissue order per contrast, reproducibility, lesion masks."""

import dataclasses

import numpy as np
import pytest

from brainuad.data import mrsim
from brainuad.io.volumes import Volume


def _phantom() -> Volume:
    """A small labelled 'head': white matter core, grey matter shell, CSF, skull and skin (1 mm)."""
    shape = (40, 44, 36)
    grid = np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in shape], indexing="ij")
    radius = np.sqrt(sum(g**2 for g in grid))
    labels = np.zeros(shape, np.uint8)
    for label, outer in ((6, 17), (7, 15), (1, 13), (2, 11), (3, 7)):  # skin, skull, CSF, GM, WM
        labels[radius <= outer] = label
    affine = np.eye(4)
    affine[:3, 3] = -(np.array(shape) - 1) / 2
    return Volume(labels, affine)


def _labels_on_output(subject, labels: Volume) -> np.ndarray:
    """The nearest input label at every output voxel (valid with ``pose=False``)."""
    image = subject.image
    idx = np.indices(image.shape).reshape(3, -1).astype(float)
    world = image.affine[:3, :3] @ idx + image.affine[:3, 3:4]
    inverse = np.linalg.inv(labels.affine)
    vox = np.rint(inverse[:3, :3] @ world + inverse[:3, 3:4]).astype(int)
    inside = np.all((vox >= 0) & (vox < np.array(labels.shape)[:, None]), axis=0)
    out = np.zeros(vox.shape[1], np.uint8)
    out[inside] = labels.array[vox[0, inside], vox[1, inside], vox[2, inside]]
    return out.reshape(image.shape)


def _tissue_medians(subject, labels: Volume) -> dict[str, float]:
    on_output = _labels_on_output(subject, labels)
    names = ((1, "csf"), (2, "gm"), (3, "wm"))
    return {name: float(np.median(subject.image.array[on_output == k])) for k, name in names}


def test_signal_equations():
    t2 = mrsim.Sequence("t2", 1.5, tr=4000.0, te=100.0)
    value = mrsim.signal(np.array([800.0]), np.array([80.0]), np.array([0.8]), t2)[0]
    assert value == pytest.approx(0.8 * (1 - np.exp(-4000 / 800)) * np.exp(-100 / 80))
    csf, white = mrsim.TISSUES_1_5T[1], mrsim.TISSUES_1_5T[3]

    def ratio(sequence):  # CSF / white matter
        def one(t):
            return mrsim.signal(t[:1], t[1:2], t[2:3], sequence)[0]

        return one(csf) / one(white)

    for seed in range(20):
        flair = mrsim.draw_sequence(np.random.default_rng(seed), "flair", 1.5)
        assert 0.8 <= flair.efficiency <= 0.92
        # Imperfect inversion: CSF darker than white matter, but not nulled (real FLAIR: 0.34-0.69 of WM).
        assert 0.1 < ratio(flair) < 1.0
    perfect = dataclasses.replace(flair, efficiency=1.0, ti=None)
    assert perfect.ti is None and ratio(perfect) > 1.0  # no inversion: spin echo, CSF bright
    perfect = dataclasses.replace(flair, efficiency=1.0)
    tr, ti, t1 = perfect.tr, perfect.ti, csf[0]
    expected = csf[2] * abs(1 - 2 * np.exp(-ti / t1) + np.exp(-tr / t1)) * np.exp(-perfect.te / csf[1])
    assert mrsim.signal(csf[:1], csf[1:2], csf[2:3], perfect)[0] == pytest.approx(expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_tissue_order_per_contrast(seed):
    labels = _phantom()
    expected = {"t2": ("csf", "gm", "wm"), "t1": ("wm", "gm", "csf"), "flair": ("gm", "wm", "csf")}
    for contrast, order in expected.items():
        for field_t in (1.5, 3.0):
            subject = mrsim.simulate(labels, seed, contrast, spacing=1.0, field_t=field_t, pose=False)
            medians = _tissue_medians(subject, labels)
            values = [medians[name] for name in order]
            assert values == sorted(values, reverse=True), (contrast, field_t, medians)


def test_simulation_is_reproducible_and_keeps_the_head():
    labels = _phantom()
    a = mrsim.simulate(labels, 3, "t2", spacing=2.0, thickness=4.0)
    b = mrsim.simulate(labels, 3, "t2", spacing=2.0, thickness=4.0)
    c = mrsim.simulate(labels, 4, "t2", spacing=2.0, thickness=4.0)
    assert np.array_equal(a.image.array, b.image.array) and a.sequence == b.sequence
    assert not np.array_equal(a.image.array, c.image.array)
    assert a.image.spacing == pytest.approx((2.0, 2.0, 4.0))
    head = a.image.array[~a.brain]
    assert np.percentile(head, 99) > 0.5 * np.median(a.image.array[a.brain])  # skin, not just noise: a head
    stripped = mrsim.simulate(labels, 3, "t2", spacing=2.0, skull=False)
    assert (stripped.image.array[~stripped.brain] == 0).all()


def test_simulated_heads_have_native_adult_brain_sizes(shared_data):
    # BrainWeb's anatomies are MNI-sized (~2.0 L of CSF, grey and white matter): simulated as they are, their skull-
    # stripped brains exceeded the QC's adult range and a fifth of each fell outside the MNI crop.
    labels = mrsim.load_anatomy(mrsim.find_anatomies(shared_data / "brainweb")[0])
    anatomy_ml = np.isin(labels.array, mrsim.BRAIN_LABELS).sum() / 1000.0
    assert anatomy_ml > 1800
    sizes = []
    for seed in (0, 1):
        subject = mrsim.simulate(labels, seed, "t2", spacing=2.0, thickness=4.0)
        sizes.append(subject.brain.sum() * np.prod(subject.image.spacing) / 1000.0)
    low, high = mrsim.NATIVE_BRAIN_ML
    assert all(0.9 * low < ml < 1.1 * high for ml in sizes) and sizes[0] != sizes[1], sizes
    # A small phantom is never enlarged.
    phantom = _phantom()
    assert mrsim.native_size_factor(np.random.default_rng(0), 50.0) == 1.0
    assert mrsim.simulate(phantom, 0, "t2", spacing=1.0, pose=True).brain.sum() > 0


def test_real_anatomy_crop_with_lesion(shared_data):
    files = mrsim.find_anatomies(shared_data / "brainweb")
    assert len(files) == 20
    full = mrsim.load_anatomy(files[0])
    crop = (slice(30, 150), slice(40, 180), slice(60, 150))  # the cerebrum around the ventricles
    offset = np.array([s.start for s in crop])
    affine = full.affine.copy()
    affine[:3, 3] += full.affine[:3, :3] @ offset
    labels = Volume(np.ascontiguousarray(full.array[crop]), affine)
    subject = mrsim.simulate(labels, 0, "t2", spacing=2.0, lesion_kind="ms", pose=False)
    medians = _tissue_medians(subject, labels)
    assert medians["csf"] > medians["gm"] > medians["wm"]
    assert subject.lesion.any() and not (subject.lesion & ~subject.brain).any()
    image = subject.image.array
    assert np.median(image[subject.lesion]) > 1.5 * medians["wm"]  # MS plaques: T2-hyperintense


def test_demo_generator_falls_back_to_the_template_without_anatomies(tmp_path, monkeypatch):
    from brainuad.demo import _synthetic_generator

    monkeypatch.chdir(tmp_path)  # no ../shared/data/brainweb from here
    monkeypatch.setenv("BRAINUAD_BRAINWEB", str(tmp_path / "nothing"))
    text, make = _synthetic_generator()
    assert "MNI template" in text and make.__module__ == "brainuad.data.synthetic"
    labels = tmp_path / "brainweb"
    labels.mkdir()
    (labels / "subject04_crisp.nii.gz").write_bytes(b"")
    monkeypatch.setenv("BRAINUAD_BRAINWEB", str(labels))
    text, make = _synthetic_generator()
    assert "1 BrainWeb anatomies" in text and make.func.__module__ == "brainuad.data.mrsim"
