"""MR images simulated from per-voxel tissue labels (BrainWeb's 20 normal anatomical models): T2, PD, T1, FLAIR.

**Simulated data**: realistic enough to exercise the chain (skull stripping, registration, scaling) and to widen a
healthy training cohort, but a simulation — no flow, no susceptibility, no fine texture within a tissue.

Signal per tissue (Bloch steady state, perfect pulses):

- spin echo (T2, PD, T1): ``S = PD · (1 − e^(−TR/T1)) · e^(−TE/T2)``;
- inversion recovery (FLAIR, magnitude): ``S = PD · |1 − (1 + a)e^(−TI/T1) + a·e^(−TR/T1)| · e^(−TE/T2)``, with an
  inversion efficiency ``a`` below 1 (a perfect pulse is ``a = 1``). Real FLAIR never nulls CSF fully (B1
  inhomogeneity, inflow of uninverted CSF, partial volume in thick slices): every real FLAIR here keeps CSF at 0.34–0.69
  of white matter (benchmarks/README.md, "FLAIR"), which ``a`` drawn in :data:`SEQUENCE_RANGES` reproduces.

Relaxation times (ms) and relative proton densities per BrainWeb label:

- 1.5 T: BrainWeb's own table (Kwan, Evans & Pike, IEEE TMI 1999; Aubert-Broche, Evans & Collins, NeuroImage 32,
  2006) for CSF, grey and white matter, fat, muscle, connective fat and dura. BrainWeb gives no values for skin
  (6) or marrow (11); for skin we use those fitted to BrainWeb's simulated images in the STANCE toolbox (Hill et
  al. 2017: T1 1800, T2 140; likewise for vessels, 8: PD 0.87, T1 900, T2 180 — BrainWeb's vessel label is mostly
  small surface vessels, which a flow void would turn into black dots) and for (fatty, adult) marrow the
  connective-fat values. Cortical bone (7) has almost no signal on conventional sequences (PD ≈ 0.05, T2 ≈ 1 ms).
- 3 T: grey and white matter from Wansapura et al., JMRI 9:531 (1999) (T1 1331/832, T2 110/80); muscle from
  Stanisz et al., MRM 54:507 (2005) (T1 1412, T2 50); subcutaneous fat from de Bazelaire et al., Radiology 230:652
  (2004) (T1 382, T2 68); CSF T1 ≈ 4 s and T2 ≈ 2 s within the ranges reviewed by Bojorquez et al., MRI 35:69
  (2017). Labels without a 3 T measurement keep their 1.5 T T2 and have T1 scaled by the grey-matter T1 ratio.

Per scan: a field strength, a sequence with parameters drawn in clinical ranges (:data:`SEQUENCE_RANGES`), each
tissue's signal multiplied by a factor in [1 − ``jitter``, 1 + ``jitter``] (SynthSeg-style randomisation, kept small
enough that the contrast's tissue order holds), partial volume from Gaussian-smoothed label fractions (the signal is
linear in the fractions, so this is the crisp signal image smoothed), a native adult brain size (the anatomies are
MNI-sized), a random rigid pose plus a small scaling and elastic deformation, in-plane blur and thick slices (box
slice profile), a smooth multiplicative bias field and Rician noise. Skull, fat, muscle and skin are simulated too,
so the head is a real head and skull stripping has work to do. Lesions (:data:`brainuad.data.synthetic.LESION_KINDS`)
are placed as in :mod:`brainuad.data.synthetic` and given relaxation times between white matter's and CSF's
(oedema/gliosis:
long T2, moderately long T1 — bright on T2 and FLAIR, dark on T1), with exact masks on the output grid.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from brainuad.data.synthetic import SyntheticSubject, _plant, _rotation, _smooth_field
from brainuad.io.volumes import Volume, to_canonical

CONTRASTS = ("t2", "pd", "t1", "flair")
#: Bumped when the same seed simulates a different scan, so that results made from older scans are not reused
#: (the demo names it among its settings). 2: native adult brain sizes. 3: FLAIR's imperfect inversion (CSF not nulled).
SIMULATION_VERSION = 3
LABELS = ("background", "csf", "grey", "white", "fat", "muscle", "skin", "skull", "vessels", "connective",
          "dura", "marrow")  # fmt: skip
BRAIN_LABELS = (1, 2, 3)
#: Native brain volumes drawn for a simulated head (mL; the simulation's brain mask): see :func:`native_size_factor`.
NATIVE_BRAIN_ML = (1000.0, 1650.0)

#: (T1 ms, T2 ms, relative PD) per label at 1.5 T (sources: module docstring).
TISSUES_1_5T = np.array([
    (1.0, 1.0, 0.0),        # background
    (2569.0, 329.0, 1.0),   # CSF
    (833.0, 83.0, 0.86),    # grey matter
    (500.0, 70.0, 0.77),    # white matter
    (350.0, 70.0, 1.0),     # fat
    (900.0, 47.0, 1.0),     # muscle
    (1800.0, 140.0, 1.0),   # muscle/skin
    (300.0, 1.0, 0.05),     # skull (cortical bone)
    (900.0, 180.0, 0.87),   # vessels (STANCE fit; a flow void would pepper the brain with black dots)
    (500.0, 70.0, 0.77),    # connective (fat around muscle)
    (2569.0, 329.0, 1.0),   # dura
    (500.0, 70.0, 0.77),    # marrow
])  # fmt: skip

_GM_T1_RATIO = 1331.0 / 833.0
#: The same at 3 T (sources: module docstring).
TISSUES_3T = TISSUES_1_5T.copy()
TISSUES_3T[:, 0] *= _GM_T1_RATIO
TISSUES_3T[1] = (4000.0, 2000.0, 1.0)
TISSUES_3T[2] = (1331.0, 110.0, 0.86)
TISSUES_3T[3] = (832.0, 80.0, 0.77)
TISSUES_3T[4] = (382.0, 68.0, 1.0)
TISSUES_3T[5] = (1412.0, 50.0, 1.0)
TISSUES_3T[10] = (4000.0, 2000.0, 1.0)
TISSUES_3T[0] = (1.0, 1.0, 0.0)

#: Clinical parameter ranges (ms) per contrast: TR, TE and, for FLAIR, TI as a factor on the CSF-nulling TI.
SEQUENCE_RANGES = {
    "t2": {"tr": (3000.0, 6000.0), "te": (80.0, 120.0)},  # T2 turbo spin echo
    "pd": {"tr": (2000.0, 4000.0), "te": (10.0, 30.0)},
    "t1": {"tr": (400.0, 600.0), "te": (8.0, 15.0)},  # T1 spin echo
    "flair": {"tr": (8000.0, 11000.0), "te": (90.0, 140.0), "ti": (0.97, 1.03), "efficiency": (0.80, 0.92)},
}


@dataclass(frozen=True)
class Sequence:
    """One acquisition's contrast parameters (ms); ``ti`` and the inversion ``efficiency`` (1: perfect) only matter
    for FLAIR."""

    contrast: str
    field_t: float
    tr: float
    te: float
    ti: float | None = None
    efficiency: float = 1.0


def draw_sequence(rng: np.random.Generator, contrast: str, field_t: float | None = None) -> Sequence:
    """Sequence parameters drawn uniformly within :data:`SEQUENCE_RANGES` (field 1.5 or 3 T at random)."""
    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}; choose from {CONTRASTS}")
    field_t = float(field_t if field_t is not None else rng.choice([1.5, 3.0]))
    ranges = SEQUENCE_RANGES[contrast]
    tr, te = float(rng.uniform(*ranges["tr"])), float(rng.uniform(*ranges["te"]))
    ti, efficiency = None, 1.0
    if contrast == "flair":  # TI meant to null CSF (Mz = 0 at TI for a perfect pulse), times a small error
        csf_t1 = tissue_table(field_t)[1, 0]
        ti = float(csf_t1 * np.log(2.0 / (1.0 + np.exp(-tr / csf_t1))) * rng.uniform(*ranges["ti"]))
        efficiency = float(rng.uniform(*ranges["efficiency"]))
    return Sequence(contrast, field_t, tr, te, ti, efficiency)


def tissue_table(field_t: float) -> np.ndarray:
    """(T1, T2, PD) per label at 1.5 or 3 T."""
    if field_t not in (1.5, 3.0):
        raise ValueError(f"relaxation times are tabulated at 1.5 T and 3 T, not {field_t} T")
    return TISSUES_1_5T if field_t == 1.5 else TISSUES_3T


def signal(t1: np.ndarray, t2: np.ndarray, pd: np.ndarray, sequence: Sequence) -> np.ndarray:
    """Steady-state magnitude signal for relaxation times ``t1``, ``t2`` (ms) and proton density ``pd``."""
    t1, t2, pd = (np.asarray(a, dtype=np.float64) for a in (t1, t2, pd))
    recovery = np.exp(-sequence.tr / t1)
    if sequence.ti is None:  # spin echo: no inversion
        longitudinal = 1.0 - recovery
    else:
        a = sequence.efficiency
        longitudinal = np.abs(1.0 - (1.0 + a) * np.exp(-sequence.ti / t1) + a * recovery)
    return pd * longitudinal * np.exp(-sequence.te / t2)


def find_anatomies(folder: str | Path | None = None) -> list[Path]:
    """The BrainWeb label files (``*_crisp*.nii*``) in ``folder``, or in the default places when ``None``.

    Default places, first hit wins: ``$BRAINUAD_BRAINWEB``, ``../shared/data/brainweb``, ``shared/data/brainweb``
    (relative to the working directory). Returns an empty list when there are none.
    """
    if folder is not None:
        candidates = [Path(folder)]
    else:
        env = os.environ.get("BRAINUAD_BRAINWEB")
        candidates = [Path(env)] if env else []
        candidates += [Path("../shared/data/brainweb"), Path("shared/data/brainweb")]
    for candidate in candidates:
        files = sorted(candidate.glob("*_crisp*.nii*")) if candidate.is_dir() else []
        if files:
            return files
    return []


@functools.lru_cache(maxsize=2)
def load_anatomy(path: str | Path) -> Volume:
    """A label volume (uint8, RAS+ voxel order); labels outside 0…11 are an error."""
    import nibabel as nib

    img = nib.load(str(path))
    labels = np.asarray(img.dataobj)
    if labels.ndim != 3 or labels.min() < 0 or labels.max() >= len(LABELS):
        raise ValueError(f"{path}: not a BrainWeb label volume (3D, labels 0…{len(LABELS) - 1})")
    array, affine = to_canonical(labels.astype(np.uint8), img.affine)
    array.setflags(write=False)
    return Volume(array, affine, path=Path(path))


@dataclass
class SimulatedSubject(SyntheticSubject):
    """A simulated scan with its brain and lesion masks, the sequence used and the anatomy it came from."""

    sequence: Sequence | None = None
    anatomy: str = ""
    extras: dict = field(default_factory=dict)


def _lesion_relaxation(table: np.ndarray, water: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relaxation of lesion tissue: geometric steps from white matter (water 0) towards CSF (water 1).

    Oedema and gliosis (water ≈ 0.3–0.7) get T1 and T2 2–4× white matter's, so they are bright on T2 and FLAIR
    and dark on T1; necrosis (water → 1) approaches CSF.
    """
    white, csf = table[3], table[1]
    step = 0.35 + 0.6 * water
    t1 = white[0] * (csf[0] / white[0]) ** step
    t2 = white[1] * (csf[1] / white[1]) ** step
    pd = white[2] + (csf[2] - white[2]) * (0.3 + 0.6 * water)
    return t1, t2, pd


def _output_grid(labels: Volume, spacing: float, thickness: float, margin: float = 8.0):
    """An axis-aligned grid covering the anatomy (+ margin): in-plane ``spacing``, slices ``thickness`` (axis 2)."""
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) * (np.array(labels.shape) - 1)
    world = labels.affine[:3, :3] @ corners.T + labels.affine[:3, 3:4]
    low, high = world.min(axis=1) - margin, world.max(axis=1) + margin
    steps = np.array([spacing, spacing, thickness])
    shape = tuple(int(np.ceil((high - low)[a] / steps[a])) + 1 for a in range(3))
    affine = np.eye(4)
    affine[:3, :3] = np.diag(steps)
    affine[:3, 3] = low  # first voxel centre on the corner (with pose=False and 1 mm, voxels coincide)
    return shape, affine


def simulate(
    labels: Volume,
    seed: int,
    contrast: str = "t2",
    spacing: float = 1.0,
    thickness: float | None = None,
    lesion_kind: str | None = None,
    skull: bool = True,
    field_t: float | None = None,
    jitter: float = 0.05,
    pose: bool = True,
) -> SimulatedSubject:
    """Simulate one scan of the anatomy ``labels`` (reproducible from ``seed``).

    Args:
        labels: BrainWeb label volume (:func:`load_anatomy`).
        seed: Seeds every random choice.
        contrast: ``t2``, ``pd``, ``t1`` or ``flair``.
        spacing: In-plane voxel size (mm).
        thickness: Slice thickness (mm, axial, no gap); default ``spacing``.
        lesion_kind: ``None`` (healthy) or one of :data:`brainuad.data.synthetic.LESION_KINDS`.
        skull: Keep the head (``False``: zero outside the brain, as a skull-stripped scan).
        field_t: 1.5 or 3 (T); default drawn at random.
        jitter: Bound of the per-tissue signal factor (SynthSeg-style randomisation).
        pose: Random rigid pose, native brain size (:func:`native_size_factor`), scaling and elastic deformation
            (``False``: the anatomy as it is, at its MNI-like size).

    Returns:
        The scan in arbitrary scanner units, its brain mask, the lesion mask (``None`` when healthy), the sequence.
    """
    rng = np.random.default_rng(seed)
    sequence = draw_sequence(rng, contrast, field_t)
    table = tissue_table(sequence.field_t)
    thickness = float(thickness or spacing)
    label = np.asarray(labels.array)
    factors = rng.uniform(1.0 - jitter, 1.0 + jitter, len(LABELS))
    per_label = (signal(table[:, 0], table[:, 1], table[:, 2], sequence) * factors).astype(np.float32)
    crisp = per_label[label]
    # Brain mask: CSF, GM, WM and the vessels on and in them (BrainWeb labels ~1 % of the brain as vessels).
    brain = ndimage.binary_fill_holes(np.isin(label, (*BRAIN_LABELS, 8)))
    # The head's native size first: lesions are planted in the anatomy's millimetres, which the head then shrinks
    # by ``size``, so their documented sizes hold on the output grid.
    brain_ml = float(brain.sum()) * float(np.prod(labels.spacing)) / 1000.0
    size = native_size_factor(rng, brain_ml) if pose else 1.0
    lesion = None
    if lesion_kind is not None:
        tissues = {"csf": (label == 1).astype(np.float32), "grey": (label == 2).astype(np.float32),
                   "white": (label == 3).astype(np.float32)}  # fmt: skip
        lesion, t2_relative = _plant(rng, lesion_kind, tissues, brain, float(labels.spacing[0]) * size)
        water = np.clip((t2_relative[lesion] - 0.5) / 0.5, 0.0, 1.0)
        t1, t2, pd = _lesion_relaxation(table, water)
        crisp[lesion] = signal(t1, t2, pd, sequence) * rng.uniform(1.0 - jitter, 1.0 + jitter)
        brain = brain | lesion
    # Partial volume (label fractions at ~0.5 mm) and the in-plane point-spread function, in one Gaussian.
    voxel = float(labels.spacing[0])
    sigma_mm = np.sqrt(0.5**2 + (0.4 * max(spacing - voxel, 0.0)) ** 2)
    crisp = ndimage.gaussian_filter(crisp, sigma_mm / voxel, truncate=3.0)

    shape, affine = _output_grid(labels, spacing, thickness)
    sub = max(1, int(np.ceil(thickness / spacing - 1e-6)))  # sub-slices per slice (box profile), in-plane step
    fine_shape = (shape[0], shape[1], shape[2] * sub)
    fine_affine = affine.copy()
    fine_affine[:3, 2] /= sub
    fine_affine[:3, 3] -= affine[:3, 2] * (sub - 1) / (2 * sub)
    coords = _source_coordinates(rng, labels, fine_shape, fine_affine, pose, size)
    image = ndimage.map_coordinates(crisp, coords, order=1, mode="constant").reshape(fine_shape)
    brain_frac = ndimage.map_coordinates(brain.astype(np.float32), coords, order=1).reshape(fine_shape)
    lesion_frac = None
    if lesion is not None:
        lesion_frac = ndimage.map_coordinates(lesion.astype(np.float32), coords, order=1).reshape(fine_shape)
    del coords

    def slices(volume: np.ndarray) -> np.ndarray:
        return volume.reshape(shape[0], shape[1], shape[2], sub).mean(axis=3)

    image, brain_out = slices(image), slices(brain_frac) > 0.5
    lesion_out = slices(lesion_frac) > 0.5 if lesion_frac is not None else None
    if lesion_out is not None:
        lesion_out &= brain_out
    # Bias field (smooth, ±10–25 %), then Rician noise at an SNR of 12–40 relative to the mean brain signal.
    coarse = tuple(int(np.ceil(s / 4)) + 1 for s in shape)
    image = image * _upsample(np.exp(_smooth_field(rng, coarse, 4, rng.uniform(0.05, 0.12))), shape, 4)
    if not skull:
        image = np.where(brain_out, image, 0.0)
    sigma = float(image[brain_out].mean()) / rng.uniform(12.0, 40.0)
    noise = rng.normal(0.0, sigma, (2, *shape))
    image = np.sqrt((image + noise[0]) ** 2 + noise[1] ** 2)
    if not skull:
        image = np.where(brain_out, image, 0.0)
    image = (image * rng.uniform(300.0, 3000.0) / max(float(per_label.max()), 1e-6)).astype(np.float32)
    return SimulatedSubject(
        Volume(image, affine), brain_out, lesion_out, lesion_kind or "healthy", sequence,
        anatomy=labels.path.name if labels.path else "", extras={"noise_sigma": sigma, "jitter": factors.tolist()},
    )  # fmt: skip


def native_size_factor(rng: np.random.Generator, brain_ml: float) -> float:
    """Linear factor from the anatomy's size to a native adult brain's (never above 1).

    Args:
        rng: Draws the native volume.
        brain_ml: The anatomy's brain volume (mL; CSF, grey and white matter and the vessels on them, holes filled).

    Returns:
        The factor by which the simulated head is smaller than the anatomy (1 for a brain already that small).

    BrainWeb's anatomies lie in a space close to MNI's, whose brains are larger than native ones (the MNI152 brain
    mask holds 2.08 L; BrainWeb's CSF + grey + white matter about 2.0 L). Without this, skull stripping finds
    2.2–2.3 L brains, above the QC's adult range, and a fifth of the brain falls outside the MNI crop after the
    rigid registration. The drawn volume, uniform in :data:`NATIVE_BRAIN_ML`, puts skull-stripped masks in the range
    of the 52 real IXI T1 individuals in ../shared/data (1.08–1.84 L, median 1.38 L, deepbet).
    """
    target = rng.uniform(*NATIVE_BRAIN_ML)
    return min(1.0, (target / brain_ml) ** (1.0 / 3.0)) if brain_ml > 0 else 1.0


def _source_coordinates(
    rng: np.random.Generator,
    labels: Volume,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    pose: bool,
    size: float = 1.0,
) -> np.ndarray:
    """Label-volume voxel coordinates of every output voxel, through pose, native size, scaling and elastic
    deformation.

    The mapping is smooth, so it is computed on a 4× coarser grid and linearly upsampled (sub-millimetre error).
    """
    step = 4
    coarse_shape = tuple(int(np.ceil(s / step)) + 1 for s in shape)
    voxels = np.indices(coarse_shape, dtype=np.float64).reshape(3, -1) * step
    world = affine[:3, :3] @ voxels + affine[:3, 3:4]
    centre = labels.affine[:3, :3] @ ((np.array(labels.shape) - 1) / 2) + labels.affine[:3, 3]
    if pose:
        linear = _rotation(rng, 10.0) @ np.diag(rng.uniform(0.95, 1.05, 3))
        shift = rng.uniform(-8.0, 8.0, (3, 1))
        # Elastic part: up to a few mm, smooth over ~3 cm.
        elastic = [_smooth_field(rng, coarse_shape, 6, 1.5).reshape(-1) for _ in range(3)]
        # Output → source: a head smaller by ``size`` samples the anatomy 1/size as far from its centre.
        linear = linear / size
        world = linear @ (world - centre[:, None]) + centre[:, None] + shift
        for axis in range(3):
            world[axis] += elastic[axis]
    source = np.linalg.inv(labels.affine) @ np.vstack([world, np.ones((1, world.shape[1]))])
    source = source[:3].reshape(3, *coarse_shape).astype(np.float32)
    return np.stack([_upsample(source[axis], shape, step) for axis in range(3)]).reshape(3, -1)


def _upsample(coarse: np.ndarray, shape: tuple[int, ...], step: int) -> np.ndarray:
    """Linear upsampling of values at voxels 0, step, 2·step… of a ``shape`` grid (cropped to ``shape``)."""
    padded = tuple((c - 1) * step + 1 for c in coarse.shape)
    # With grid_mode=False zoom maps corner to corner: input index = output index · (c − 1)/(p − 1) = 1/step.
    full = ndimage.zoom(coarse, [p / c for p, c in zip(padded, coarse.shape)], order=1, grid_mode=False)
    return full[: shape[0], : shape[1], : shape[2]]


def simulated_subject(
    seed: int,
    lesion_kind: str | None = None,
    spacing: float = 2.0,
    anatomies: list[Path] | None = None,
    contrast: str = "t2",
    skull: bool = True,
) -> SimulatedSubject:
    """A :func:`brainuad.data.synthetic.write_cohort`-compatible subject: anatomy ``seed`` mod the number of
    anatomies."""
    anatomies = anatomies if anatomies is not None else find_anatomies()
    if not anatomies:
        raise FileNotFoundError("no BrainWeb anatomies found (set BRAINUAD_BRAINWEB or pass anatomies)")
    labels = load_anatomy(anatomies[seed % len(anatomies)])
    return simulate(labels, seed, contrast, spacing, lesion_kind=lesion_kind, skull=skull)
