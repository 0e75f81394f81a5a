"""Finding scans on disk: healthy cohorts (IXI naming), BraTS-style and MS-style labelled cases, slice-label CSVs.

Layouts understood:

- **Healthy folder**: every NIfTI below it is a healthy scan (except masks: names with ``mask``, ``seg``…); IXI
  names (``IXI002-Guys-0828-T2.nii.gz``) are parsed for subject and site, and ``modality`` filters them
  (``-T2``); other names are taken as they are.
- **BraTS-style**: one folder per case holding ``<case>_t2.nii.gz`` and ``<case>_seg.nii.gz``; any label > 0 is
  lesion.
- **MS-style**: one folder per case holding ``T2.nii.gz`` (or ``T2_*.nii.gz``) and one mask whose name contains
  ``mask``, ``lesion``, ``gold_standard``, ``consensus`` or ``seg``.
- **Slice-label CSV** (data labelled per slice only, like the paper's in-house sets): columns ``image,slice,label``;
  ``image`` is a path relative to the CSV's folder, ``slice`` the 0-based index along the file's third (axial)
  axis, ``label`` 0 (normal) or 1 (abnormal). Slices not listed are unlabelled.
"""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from brainuad.errors import BrainuadError, InputError, OutputError
from brainuad.io.files import walk
from brainuad.io.volumes import is_nifti_path, strip_nifti_suffix
from brainuad.preprocess.cases import is_case_folder

IXI_NAME = re.compile(r"^(?P<subject>IXI\d{3})-(?P<site>Guys|HH|IOP)-(?P<number>\d{4})-(?P<modality>[A-Za-z0-9]+)")
MASK_WORDS = ("mask", "lesion", "gold_standard", "consensus", "seg", "label")


@dataclass(frozen=True)
class HealthyScan:
    """A healthy scan; ``subject`` and ``site`` come from IXI names when present."""

    path: Path
    subject: str
    site: str | None = None


@dataclass(frozen=True)
class LabelledCase:
    """A patient scan with voxel labels (``label_path``) and/or slice labels (``slice_labels``: index → 0/1)."""

    name: str
    image_path: Path
    label_path: Path | None = None
    slice_labels: dict[int, int] | None = field(default=None, hash=False)
    layout: str = "brats"


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_nifti_path(p))


def _require_folder(folder: Path) -> None:
    if not folder.exists():
        raise InputError(folder, "folder not found")
    if not folder.is_dir():
        raise InputError(folder, "expected a folder")


def find_healthy_scans(folder: str | Path, modality: str | None = "T2") -> list[HealthyScan]:
    """Healthy scans below ``folder``.

    Args:
        folder: Searched recursively.
        modality: For IXI-named files, keep only this modality (``T2``, ``T1``, ``PD``…); ``None`` keeps all.
            Files without IXI names are always kept.

    Raises:
        InputError: The folder is missing or holds no matching scan.
    """
    folder = Path(folder)
    _require_folder(folder)
    scans = []
    for path in (p for p in walk(folder) if p.is_file() and is_nifti_path(p)):
        if any(word in path.name.lower() for word in MASK_WORDS):
            continue  # brain or lesion masks stored beside the scans are not scans
        match = IXI_NAME.match(path.name)
        if match:
            if modality and match["modality"].upper() != modality.upper():
                continue
            scans.append(HealthyScan(path, match["subject"], match["site"]))
        else:
            scans.append(HealthyScan(path, strip_nifti_suffix(path)))
    if not scans:
        raise InputError(folder, f"no healthy {modality or ''} scans (.nii/.nii.gz) found".replace("  ", " "))
    return scans


def find_brats_cases(folder: str | Path, modality: str = "t2") -> list[LabelledCase]:
    """BraTS-style cases below ``folder`` (``*_<modality>.nii.gz`` + ``*_seg.nii.gz`` in one folder)."""
    folder = Path(folder)
    _require_folder(folder)
    cases = []
    suffix = f"_{modality.lower()}"
    for seg in (p for p in walk(folder) if fnmatch.fnmatch(p.name, "*_seg.nii*")):
        stem = strip_nifti_suffix(seg)[: -len("_seg")]
        images = [p for p in _nifti_files(seg.parent) if strip_nifti_suffix(p).lower() == (stem + suffix).lower()]
        if not images:
            # Dropping the case silently would report on fewer cases than were given.
            raise InputError(
                seg.parent, f"case {stem} has no {modality} image ({stem}{suffix}.nii.gz) beside {seg.name}"
            )
        cases.append(LabelledCase(stem, images[0], seg, layout="brats"))
    return cases


def find_ms_cases(folder: str | Path, modality: str = "T2") -> list[LabelledCase]:
    """MS-style cases: folders holding ``<modality>.nii.gz`` (or ``<modality>_*``) and one lesion mask."""
    folder = Path(folder)
    _require_folder(folder)
    cases = []
    candidates = [folder, *(p for p in walk(folder) if p.is_dir())]
    for case_dir in candidates:
        files = _nifti_files(case_dir)
        masks = [p for p in files if any(w in p.name.lower() for w in MASK_WORDS)]
        images = [
            p for p in files if p not in masks and re.match(rf"^{re.escape(modality)}([_\-.]|$)", p.name, re.IGNORECASE)
        ]
        if len(images) == 1 and len(masks) == 1 and not masks[0].name.lower().endswith(f"_seg{masks[0].suffix}"):
            # The case is its folder (named by it even when given directly: 'stroke', not 'T2_head'); the layout
            # is "an image and a mask in one folder", whatever the disease.
            cases.append(LabelledCase(case_dir.resolve().name, images[0], masks[0], layout="image+mask"))
        elif len(images) == 1 and len(masks) > 1:
            raise InputError(case_dir, f"several lesion masks ({', '.join(m.name for m in masks)}); keep one")
    return cases


def read_slice_labels(csv_path: str | Path) -> list[LabelledCase]:
    """Cases with slice-level labels from a CSV (``image,slice,label``; see module docs).

    Raises:
        InputError: Missing columns, non-integer slices, labels other than 0/1, or images that do not exist — with
            the CSV line number.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(csv_path, "slice-label CSV not found")
    labels: dict[Path, dict[int, int]] = {}
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"image", "slice", "label"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(csv_path, f"missing column(s) {sorted(missing)}; expected image,slice,label")
        for line, row in enumerate(reader, start=2):
            try:
                index = int(row["slice"])
                label = int(row["label"])
            except (TypeError, ValueError):
                raise InputError(csv_path, f"line {line}: slice and label must be integers, got {row}") from None
            if label not in (0, 1) or index < 0:
                raise InputError(csv_path, f"line {line}: label must be 0/1 and slice >= 0, got {row}")
            image = (csv_path.parent / row["image"]).resolve()
            if not image.is_file():
                raise InputError(csv_path, f"line {line}: image {row['image']} not found")
            labels.setdefault(image, {})[index] = label
    return [LabelledCase(strip_nifti_suffix(p), p, None, dict(v), layout="slice-csv") for p, v in labels.items()]


def find_labelled_cases(source: str | Path, modality: str = "t2") -> list[LabelledCase]:
    """Labelled cases from a folder (BraTS- and MS-style, detected) or a slice-label CSV.

    Raises:
        InputError: Nothing usable found.
    """
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        return read_slice_labels(source)
    cases = find_brats_cases(source, modality) + find_ms_cases(source, modality)
    if not cases:
        raise InputError(
            source,
            f"no labelled cases found (expected BraTS-style *_{modality.lower()}.nii.gz + *_seg.nii.gz, or "
            f"MS-style {modality.upper()}.nii.gz + a lesion mask per folder, or a slice-label CSV)",
        )
    return cases


def find_case_folders(folders: list[str | Path] | tuple[str | Path, ...]) -> list[Path]:
    """Preprocessed case folders (from ``brainuad preprocess``) in the given folders (or given directly).

    Raises:
        InputError: A folder holds no preprocessed case (with a hint to run ``brainuad preprocess``).
    """

    found: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        _require_folder(folder)
        if is_case_folder(folder):
            found.append(folder)
            continue
        cases = sorted(p for p in folder.iterdir() if p.is_dir() and is_case_folder(p))
        if not cases:
            hint = (
                " (it holds raw NIfTI files: run 'brainuad preprocess' on it first)"
                if any(is_nifti_path(p) for p in walk(folder))
                else ""
            )
            raise InputError(folder, f"no preprocessed cases found{hint}")
        found.extend(cases)
    return found


class VolumeCache:
    """All training volumes in one float16 array on disk (memory-mapped), read once from NIfTI.

    An epoch then reads from the page cache instead of decompressing and validating NIfTI files; cohorts larger than
    memory still work (the OS pages volumes in and out).

    The cache lives outside the run folder (a run folder is shared; the scans must not travel with it), in
    ``<cache root>/training/<key>/`` (:func:`brainuad.io.portable.cache_root`), where the key is a hash of the
    cases' image contents in order: different data never share a cache, and the same data (a resumed run) find
    theirs. Concurrent runs are safe: the cache is built under an exclusive lock, used under a shared one, and
    :meth:`remove` deletes it only when no other run uses it.

    Args:
        case_folders: Preprocessed cases; all must share one crop grid.
        cache_file: ``.npy`` file to create (or reuse, when it matches the cases); default: in the cache root.
    """

    def __init__(self, case_folders: list[Path], cache_file: str | Path | None = None):
        import hashlib
        import json

        import numpy as np

        from brainuad.io.provenance import sha256_file
        from brainuad.io.volumes import load_volume

        self.case_folders = [Path(p) for p in case_folders]
        if not self.case_folders:
            raise InputError(None, "no cases to cache")
        key = [sha256_file(p / "image.nii.gz") for p in self.case_folders]
        if cache_file is None:
            from brainuad.io.portable import cache_root

            digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]
            cache_file = cache_root() / "training" / digest / "volumes.npy"
        cache_file = Path(cache_file)
        self.path = cache_file
        index_file = cache_file.with_suffix(".json")
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _unusable_cache(cache_file.parent, exc) from exc
        self._lock = _CacheLock(cache_file.parent)
        with self._lock.exclusive():  # one builder at a time; the others wait, then reuse its cache
            if cache_file.exists() and index_file.exists() and json.loads(index_file.read_text()).get("key") == key:
                self.array = np.load(cache_file, mmap_mode="r")
                return
            # Left by a build that was killed (no other build runs: this one holds the build lock).
            for stale in cache_file.parent.glob("*.partial-*"):
                stale.unlink(missing_ok=True)
            first = load_volume(self.case_folders[0] / "image.nii.gz")
            shape = (len(self.case_folders), *first.shape)
            tmp = cache_file.with_name(f"{cache_file.stem}.partial-{os.getpid()}.npy")
            _check_free_space(cache_file.parent, int(np.prod(shape)) * 2)
            try:
                array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
                _reserve(tmp)
                for i, folder in enumerate(self.case_folders):
                    volume = first if i == 0 else load_volume(folder / "image.nii.gz")
                    if volume.shape != first.shape:
                        raise InputError(
                            folder / "image.nii.gz",
                            f"shape {volume.shape} differs from {first.shape} of {self.case_folders[0].name}; "
                            "preprocess all scans with the same preset",
                        )
                    array[i] = volume.array.astype(np.float16)
                array.flush()
                del array
                index_file.unlink(missing_ok=True)
                tmp.replace(cache_file)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            # Case names only: the cache is keyed by content, and no path of the data is needed to reuse it.
            partial = index_file.with_name(f"{index_file.stem}.partial-{os.getpid()}.json")
            partial.write_text(json.dumps({"key": key, "cases": [p.name for p in self.case_folders]}))
            partial.replace(index_file)
            self.array = np.load(cache_file, mmap_mode="r")

    def remove(self) -> bool:
        """Delete the cache (the training scans' copy), unless another run is using it now; ``True`` if deleted.

        Called when training has finished: a resumed run builds it again. The memory-mapped array stays readable
        in this process until it is dropped. A cache this process already released (a DDP rank) is removed too when
        nobody uses it: every rank may call this after all have released it, and one of them removes it.
        """
        return self._lock.remove_if_unused(self.path, self.path.with_suffix(".json"))

    def release(self) -> None:
        """Stop using the cache without removing it (a DDP rank before rank 0 removes it)."""
        self._lock.release()

    def __len__(self) -> int:
        return int(self.array.shape[0])

    @property
    def volume_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape[1:])  # type: ignore[return-value]


class _CacheLock:
    """Two ``flock`` files in the cache folder: ``.build.lock``, exclusive while one process checks, builds or
    removes the cache (others wait, then reuse it); ``.use.lock``, shared while a run uses it, so that a remover
    (which tries it exclusively, without waiting) leaves a cache another run still reads.

    A lock file removed (with its cache) while another process was opening it is detected (its inode is no longer
    the file's) and the lock taken again on the new file.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.use: int | None = None

    def _lock(self, name: str, mode: int) -> int:
        import fcntl

        while True:
            path = self.folder / name
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                # Read-only is enough for flock (another user's 0644 lock file opens too).
                handle = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
            except OSError as exc:
                raise _unusable_cache(self.folder, exc) from exc
            with contextlib.suppress(OSError):  # no locks on this file system (some network mounts): go unlocked
                fcntl.flock(handle, mode)
            try:
                if os.stat(path).st_ino == os.fstat(handle).st_ino:
                    return handle
            except FileNotFoundError:
                pass
            os.close(handle)

    @contextlib.contextmanager
    def exclusive(self):
        """Build (or check) the cache alone in the block; the cache is then in use until :meth:`release`."""
        import fcntl

        build = self._lock(".build.lock", fcntl.LOCK_EX)
        try:
            yield
            if self.use is None:
                self.use = self._lock(".use.lock", fcntl.LOCK_SH)
        finally:
            os.close(build)

    def remove_if_unused(self, *files: Path) -> bool:
        """Delete ``files`` and the lock files when no other user holds the cache; always stop using it."""
        import fcntl

        if self.use is None and not self.folder.is_dir():
            return False  # removed already (by another DDP rank)
        build = self._lock(".build.lock", fcntl.LOCK_EX)
        try:
            if self.use is None:  # released before (a DDP rank): take it again to see whether another run uses it
                self.use = self._lock(".use.lock", fcntl.LOCK_SH)
            try:
                fcntl.flock(self.use, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False  # another run uses it: that one removes the cache when it finishes
            for path in files:
                path.unlink(missing_ok=True)
            for name in (".use.lock", ".build.lock"):
                (self.folder / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.folder.rmdir()
            return True
        finally:
            self.release()
            os.close(build)

    def release(self) -> None:
        """Stop using the cache (another run may then remove it)."""
        if self.use is not None:
            os.close(self.use)
            self.use = None

    def __del__(self):
        with contextlib.suppress(Exception):
            self.release()


def check_cache_folder() -> Path:
    """The training caches' folder (``<cache root>/training``, :func:`brainuad.io.portable.cache_root`), created;
    checked before a run writes anything, so that an unusable one fails the run before it starts.

    Raises:
        OutputError: The folder cannot be created or written (``BRAINUAD_CACHE_DIR`` names a read-only folder).
    """
    import errno

    from brainuad.io.portable import cache_root

    folder = cache_root() / "training"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unusable_cache(folder, exc) from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _unusable_cache(folder, PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
    return folder


def _unusable_cache(folder: Path, exc: OSError) -> OutputError:
    return OutputError(
        folder,
        f"cannot write the training cache ({exc.strerror or exc}); set BRAINUAD_CACHE_DIR to a writable folder",
    )


def _check_free_space(folder: Path, needed: int) -> None:
    """Refuse, before creating it, a cache the disk cannot hold (writing a memory-mapped file on a full disk kills
    the process with SIGBUS, no message)."""
    import shutil

    from brainuad.errors import OutputError

    free = shutil.disk_usage(folder).free
    if needed + 64 * 1024**2 > free:
        raise OutputError(
            folder,
            f"not enough disk space for the training cache: it needs {needed / 1024**3:.2f} GiB, "
            f"{free / 1024**3:.2f} GiB are free; free some space, then run the same command with --resume",
        )


def _reserve(path: Path) -> None:
    """Allocate the file's blocks now, so a full disk is an error here rather than a SIGBUS while writing."""
    import errno
    import os

    from brainuad.errors import OutputError

    try:
        with open(path, "r+b") as handle:
            os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            return  # the file system cannot reserve blocks: the free-space check above has to do
        path.unlink(missing_ok=True)
        raise OutputError(
            path,
            f"cannot allocate the training cache ({exc.strerror or exc}); free some disk space, "
            "then run the same command with --resume",
        ) from exc


#: Modality words in file names (``IXI002-Guys-0828-T2``, ``Brats18_x_t1ce``, ``T1.nii.gz``), separated by - _ .
_MODALITY_WORD = re.compile(r"(?:^|[-_.\s])(t1ce|t1c|t1w?|t2w?|flair|pd)(?=$|[-_.\s])", re.IGNORECASE)


def modality_from_name(name: str) -> str | None:
    """The MRI modality a file name states (``T1``, ``T2``, ``FLAIR``, ``PD``, ``T1CE``), or ``None``."""
    match = _MODALITY_WORD.search(Path(name).name)
    if not match:
        return None
    word = match[1].upper()
    return {"T1W": "T1", "T2W": "T2", "T1C": "T1CE"}.get(word, word)


def case_signature(folder: Path) -> dict[str, str | None]:
    """What must agree between the preprocessed cases of one cohort: crop grid, template contrast, modality.

    Read from ``record.json`` (missing fields are ``None``: they cannot conflict).
    """
    import json

    try:
        record = json.loads((Path(folder) / "record.json").read_text())
    except (OSError, ValueError):
        record = {}
    grid = record.get("grid") if isinstance(record.get("grid"), dict) else {}
    source = (record.get("input") or {}).get("path") if isinstance(record.get("input"), dict) else None
    shape = grid.get("shape")
    return {
        "crop grid": f"{grid.get('name')} {'×'.join(map(str, shape))}" if grid.get("name") and shape else None,
        "template contrast": (record.get("preprocessing") or {}).get("template_contrast")
        if isinstance(record.get("preprocessing"), dict)
        else None,
        "modality": modality_from_name(source) if source else None,
    }


def check_one_cohort(folders: list[Path], what: str = "--data") -> None:
    """Refuse preprocessed cases that mix crop grids, template contrasts or modalities, naming them.

    Raises:
        BrainuadError: The cases disagree (before any work is done on them).
    """
    signatures = {Path(f): case_signature(Path(f)) for f in folders}
    for key in ("crop grid", "template contrast", "modality"):
        groups: dict[str, list[str]] = {}
        for folder, signature in signatures.items():
            if signature[key] is not None:
                groups.setdefault(str(signature[key]), []).append(folder.name)
        if len(groups) > 1:
            listing = "; ".join(
                f"{value}: {', '.join(names[:3])}{f' (+{len(names) - 3} more)' if len(names) > 3 else ''}"
                for value, names in sorted(groups.items())
            )
            raise BrainuadError(
                f"{what} mixes scans of different {key} ({listing}); one model needs one {key}: "
                "give them as separate cohorts",
            )
