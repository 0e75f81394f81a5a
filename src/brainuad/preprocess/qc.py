"""Quality control of a scan before and after preprocessing: is it a brain, of an adult, registered well, of the
contrast the model knows, and will it fit in memory? Hard failures raise; doubts become warnings in the record."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainuad.errors import InputError
from brainuad.io.volumes import Volume
from brainuad.preprocess.templates import Grid

#: Adult brains (with the cerebellum) span about 1000–1900 mL here; far outside is a child, a wrong mask or no brain.
BRAIN_VOLUME_QC_ML = (800.0, 2200.0)
#: Real healthy scans register with a brain-mask Dice of 0.73–0.95 here; well below, the anatomy does not match.
REGISTRATION_DICE_QC = 0.6


#: Brains vary in intensity (grey/white matter, CSF): a (p95 − p5) / median spread below this is not a brain
#: (measured on the real T1, T2 and FLAIR scans in ../shared/data: 0.83–1.72; a uniform ball with noise: 0.03).
MIN_INTENSITY_SPREAD = 0.25


def qc_warnings(brain_volume_ml: float, registration_dice: float, spread: float | None = None) -> list[str]:
    """QC gates that do not stop a scan but make its result doubtful, in words (recorded in every summary)."""
    found = []
    if spread is not None and spread < MIN_INTENSITY_SPREAD:
        found.append(
            f"QC: intensities inside the brain mask hardly vary ((p95 − p5) / median = {spread:.3f} < "
            f"{MIN_INTENSITY_SPREAD}): no grey/white matter or CSF contrast — this may not be a brain MRI"
        )
    low, high = BRAIN_VOLUME_QC_ML
    if not low <= brain_volume_ml <= high:
        found.append(
            f"QC: brain volume {brain_volume_ml:.0f} mL is outside the adult range {low:.0f}–{high:.0f} mL (a child, a "
            "partial scan, a failed brain mask, or not a brain): the model knows adult brains only"
        )
    if registration_dice < REGISTRATION_DICE_QC:
        found.append(
            f"QC: registration overlap with the MNI brain is low (Dice {registration_dice:.2f} < "
            f"{REGISTRATION_DICE_QC}): anatomy may be misplaced and healthy tissue flagged"
        )
    return found


def csf_to_white_matter(image_mni: np.ndarray, mask_mni: np.ndarray, grid: Grid) -> float | None:
    """The scan's contrast in one number: median scaled intensity in MNI CSF over that in MNI white matter (> 1: CSF
    bright, T2-like; < 1: CSF dark, T1- or FLAIR-like); ``None`` when the crop holds too little of either.

    Measured at 2 mm: 52 real T1 scans 0.35–0.88, two real T2 1.4–1.8, one FLAIR 0.94."""
    from brainuad.preprocess.templates import tissue_masks_on

    csf, white = (m & mask_mni for m in tissue_masks_on(grid))
    if csf.sum() < 10 or white.sum() < 10:
        return None
    white_level = float(np.median(image_mni[white]))
    return float(np.median(image_mni[csf])) / white_level if white_level > 0 else None


def contrast_warning(ratio: float | None, reference: float | None) -> list[str]:
    """A QC warning when a scan's contrast is on the other side of 1 from the healthy scans the model was calibrated
    on (a T1 scan given to a T2 model, say)."""
    if ratio is None or reference is None or (ratio > 1) == (reference > 1):
        return []

    def kind(r: float) -> str:
        return "T2-like (CSF brighter than white matter)" if r > 1 else "T1/FLAIR-like (CSF darker than white matter)"

    return [
        f"QC: the scan's contrast looks {kind(ratio)} (CSF/WM {ratio:.2f}), but the model was calibrated on "
        f"{kind(reference)} scans (CSF/WM {reference:.2f}): a different contrast is flagged as anomalous everywhere"
    ]


#: A scan's CSF/WM ratio more than this factor away from the model's healthy scans, on the other side of 1, is another
#: contrast (T1 given to builtin:t2: 0.25 against 4.2; real T1 0.35–0.88, T2 1.4–1.8, FLAIR 0.94): refused by default.
STRONG_CONTRAST_FACTOR = 2.0


def strong_contrast_mismatch(ratio: float | None, reference: float | None) -> bool:
    """Whether the contrast mismatch is strong enough to refuse the scan (see :data:`STRONG_CONTRAST_FACTOR`)."""
    if ratio is None or reference is None or ratio <= 0 or reference <= 0 or (ratio > 1) == (reference > 1):
        return False
    return max(ratio / reference, reference / ratio) > STRONG_CONTRAST_FACTOR


#: Neighbouring voxels of a brain MRI are alike: their correlation inside the brain mask is 0.59–0.95 on the real T1,
#: T2 and FLAIR scans in ../shared/data (lowest: MS FLAIR), 0.00 for random noise shaped like a head.
MIN_NEIGHBOUR_CORRELATION = 0.3


def neighbour_correlation(array: np.ndarray, mask: np.ndarray) -> float | None:
    """Largest correlation, over the three axes, between the values of neighbouring voxels inside ``mask``
    (thick slices lower it along one axis only); ``None`` with too few voxels."""
    best = None
    inside = array[mask]
    if inside.size < 100:
        return None
    # Clipped to the 1st–99th percentiles, so that a few extreme voxels (32767 in a BraTS scan) do not decide it.
    low, high = np.percentile(inside, [1, 99])
    array = np.clip(array, low, high)
    for axis in range(3):
        first = [slice(None)] * 3
        second = [slice(None)] * 3
        first[axis], second[axis] = slice(0, -1), slice(1, None)
        both = mask[tuple(first)] & mask[tuple(second)]
        if both.sum() < 100:
            continue
        x = array[tuple(first)][both].astype(np.float64)
        y = array[tuple(second)][both].astype(np.float64)
        if x.std() == 0 or y.std() == 0:
            continue
        value = float(np.corrcoef(x, y)[0, 1])
        best = value if best is None else max(best, value)
    return best


def refuse_noise(volume: Volume, mask: np.ndarray) -> None:
    """Refuse, naming the file, an image whose neighbouring voxels are unrelated: random noise, not a brain MRI."""
    correlation = neighbour_correlation(volume.array, mask)
    if correlation is not None and correlation < MIN_NEIGHBOUR_CORRELATION:
        raise InputError(
            volume.path,
            f"this is not a brain: neighbouring voxels are unrelated (correlation {correlation:.2f} < "
            f"{MIN_NEIGHBOUR_CORRELATION}; brain MRI: 0.6–0.95), as in random noise",
        )


def refuse_label_maps(volume: Volume) -> None:
    """A mask or label map stored beside the scans (brain mask, lesion mask) is not a scan: say so, naming it."""
    if np.unique(volume.array[::3, ::3, ::3]).size > 8:
        return
    values = np.unique(volume.array)
    if values.size <= 8:
        shown = ", ".join(f"{v:g}" for v in values)
        raise InputError(volume.path, f"holds only the values {shown}: a mask or label map, not a scan")


#: Peak memory of preprocessing one scan, in float32 copies of the scan (measured: a 2 GiB scan peaked at 13.2 GiB).
MEMORY_PER_SCAN_COPIES = 7


def available_memory() -> int | None:
    """Memory this process can still get, in bytes; ``None`` where unknown.

    The least of: what the kernel can give without swapping (``MemAvailable``), what the container's cgroup still
    allows (``memory.max`` − ``memory.current``), and the process's address-space limit (``ulimit -v``) — a batch
    system's limit is usually one of the last two, far below the machine's free memory.
    """
    import resource

    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        cgroup = Path("/sys/fs/cgroup")
        maximum = (cgroup / "memory.max").read_text().strip()
        if maximum != "max":
            limits.append(int(maximum) - int((cgroup / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        pass
    for which in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        soft, _ = resource.getrlimit(which)
        if soft != resource.RLIM_INFINITY:
            limits.append(max(0, soft - _resident_bytes()))
    return min(limits) if limits else None


def _resident_bytes() -> int:
    """This process's current virtual size (what ``RLIMIT_AS`` counts), in bytes (0 where unknown)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def check_memory(path: Path) -> None:
    """Refuse, from the header alone, a scan whose preprocessing would not fit in memory (before reading it)."""
    from brainuad.io.volumes import read_grid

    shape, _ = read_grid(path)
    needed = int(np.prod(shape, dtype=np.int64)) * 4 * MEMORY_PER_SCAN_COPIES
    available = available_memory()
    if available is not None and needed > available:
        raise InputError(
            path,
            f"preprocessing this {shape} scan needs about {needed / 1024**3:.1f} GiB of memory, "
            f"{available / 1024**3:.1f} GiB are available; down-sample or crop it first",
        )
