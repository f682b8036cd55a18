"""The dataset: decoded scans of the requested classes with patient ids, cached in data/processed/, the
patient-level train/validation split (`VAL_FRACTION`, `SPLIT_SEED`), the training split a config asks for,
image folders, and the export of the portable data cache.
"""
import dataclasses
import hashlib
import json
import pathlib
import warnings

import numpy as np

from covgan_utils.data.decoding import (
    IMAGE_RULES,
    IMAGE_SIZE,
    DataError,
    DuplicateScansWarning,
    RebuiltCacheWarning,
    SkippedFilesWarning,
    _read_and_decode,
    _read_source,
    _skipped_message,
    check_image,
)
from covgan_utils.data.sources import (
    CACHE_ARRAYS,
    CACHE_FORMAT,
    CACHE_FORMAT_VERSION,
    CLASSES,
    HOW_TO_CACHE,
    HOW_TO_GET,
    _fallback_patient,
    _folder_sources,
    _list_sources,
    check_cache_arrays,
    find_data_dir,
    open_npz,
    read_cache_file,
    read_patient_ids,
)
from covgan_utils.util import files as files_lib
from covgan_utils.util import paths

CACHE_VERSION = 2  # 2: byte-identical scans share the patient of their first occurrence

# The patient-level split every part of the project holds out (GAN, domain encoder, metrics, widget).
VAL_FRACTION = 0.2
SPLIT_SEED = 0








@dataclasses.dataclass
class Dataset:
    """Images [N, 128, 128, 1] in [-1, 1] with one metadata row per image."""

    images: np.ndarray
    files: np.ndarray  # [N] file name as on disk
    classes: np.ndarray  # [N] "CT_COVID" | "CT_NonCOVID"
    patients: np.ndarray  # [N] patient id, prefixed by class
    flipped: np.ndarray  # [N] bool, True for the lateral-flip copy

    def __len__(self):
        return len(self.images)

    def subset(self, index):
        """Rows `index` (indices or boolean mask) as a new Dataset."""
        return Dataset(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))


# ---------------------------------------------------------------- loading

def _cache_key(data_dir, classes, flip, size, listing):
    blob = json.dumps([CACHE_VERSION, str(pathlib.Path(data_dir).resolve()), list(classes), flip, size, listing])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _decode_class(data_dir, cls, size):
    """(images, files, patients, SHA-256 digests, skipped) of one class; each file is read once, decoded and hashed."""
    patient_of = read_patient_ids(data_dir, cls)
    images, files, digests, skipped = [], [], [], []
    for name, read, n_bytes, _ in _list_sources(data_dir, cls):
        blob, reason = _read_source(name, read, n_bytes)
        image, reason = (None, reason) if blob is None else check_image(blob, size)
        if image is None:
            skipped.append((name, reason))
            continue
        images.append(image)
        files.append(name)
        digests.append(hashlib.sha256(blob).hexdigest())
    patients = [f"{cls}/{patient_of.get(f) or _fallback_patient(f)}" for f in files]
    return images, files, patients, digests, skipped


def _share_duplicate_patients(names, patients, digests):
    """(patients, [(copy, first)]): every byte-identical copy is given the patient of its first occurrence."""
    first, pairs, shared = {}, [], list(patients)
    for i, digest in enumerate(digests):
        j = first.setdefault(digest, i)
        if j != i:
            shared[i] = shared[j]
            pairs.append((names[i], names[j]))
    return shared, pairs


def _duplicates_message(pairs, where):
    """One line for a DuplicateScansWarning: the count, the first pairs, what was done."""
    listed = ", ".join(f"{copy} = {first}" for copy, first in pairs[:5]) + (", ..." if len(pairs) > 5 else "")
    return (f"{len(pairs)} scan file(s) in {where} are byte-identical copies of earlier ones: {listed}; all are kept, each copy "
            f"with the patient of its first occurrence so the patient-level split keeps them together (remove the copies to silence this)")


def _read_project_cache(cache_file, size):
    """The Dataset in the project's cache `cache_file`, or None when it is damaged: warned once, removed, to be rebuilt."""
    fix = "rebuilding it from the scans"
    try:
        with open_npz(cache_file) as z:
            if z is None:
                raise DataError(f"data cache {cache_file} cannot be used: not a readable .npz (truncated or damaged); {fix}")
            arrays = check_cache_arrays(z, cache_file, size, CACHE_ARRAYS + ("flipped",), fix)
    except DataError as err:
        warnings.warn(str(err), RebuiltCacheWarning, stacklevel=3)
        _remove(cache_file)
        return None
    return Dataset(**arrays)


def load_dataset(path=None, classes=("CT_COVID",), flip=True, size=IMAGE_SIZE, cache=True):
    """Load and preprocess the scans of `classes`; returns a Dataset (images + file/class/patient)."""
    classes = tuple([classes] if isinstance(classes, str) else classes)
    unknown = [c for c in classes if c not in CLASSES]
    if unknown:
        raise ValueError(f"unknown class {unknown}; choose from {CLASSES}")
    data_dir = find_data_dir(path)
    if data_dir.is_file():
        return _load_cache_file(data_dir, classes, flip, size)
    listing = {c: [s[0:1] + s[2:] for s in _list_sources(data_dir, c)] for c in classes}
    cache_file = paths.PROCESSED_DIR / f"covid-ct-{_cache_key(data_dir, classes, flip, size, listing)}.npz"
    if cache and cache_file.is_file():
        cached = _read_project_cache(cache_file, size)
        if cached is not None:
            return cached
    images, files, labels, patients, digests, skipped = [], [], [], [], [], []
    for cls in classes:
        i, f, p, d, s = _decode_class(data_dir, cls, size)
        images += i
        files += f
        patients += p
        digests += d
        labels += [cls] * len(f)
        skipped += [(f"{cls}/{name}", reason) for name, reason in s]
    if skipped:
        warnings.warn(_skipped_message(skipped, data_dir), SkippedFilesWarning, stacklevel=2)
    patients, pairs = _share_duplicate_patients([f"{c}/{f}" for c, f in zip(labels, files)], patients, digests)
    if pairs:
        warnings.warn(_duplicates_message(pairs, data_dir), DuplicateScansWarning, stacklevel=2)
    if not images:
        raise DataError(f"no readable image of {', '.join(classes)} in {data_dir}; {HOW_TO_GET}")
    images = np.stack(images)[..., None]  # [N, size, size, 1]
    ds = Dataset(images, np.array(files), np.array(labels), np.array(patients), np.zeros(len(files), bool))
    if flip:
        ds = _with_flips(ds)
    if cache:
        _save_cache(cache_file, ds)
    return ds


def _with_flips(ds):
    mirrored = ds.images[:, :, ::-1, :]  # [N, H, W, 1] left-right flip
    return Dataset(
        np.concatenate([ds.images, mirrored]),
        np.concatenate([ds.files, ds.files]),
        np.concatenate([ds.classes, ds.classes]),
        np.concatenate([ds.patients, ds.patients]),
        np.concatenate([ds.flipped, ~ds.flipped]),
    )


def _remove(file):
    """Delete `file` if it can be (a read-only checkout keeps it: the rebuilt cache is then not saved either)."""
    try:
        file.unlink(missing_ok=True)
    except OSError:
        pass


def _save_cache(cache_file, ds):
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        files_lib.write_atomic(cache_file, lambda fh: np.savez(fh, **{f.name: getattr(ds, f.name) for f in dataclasses.fields(ds)}))
    except OSError as err:  # a read-only checkout still works, just without the cache
        warnings.warn(f"could not write cache {cache_file}: {err}", stacklevel=3)


# ---------------------------------------------------------------- portable data cache

def export_cache(out_file, path=None):
    """Write the preprocessed scans of both classes, without flip copies, to ONE compressed .npz; returns its path.

    Holds images float16 [N, 128, 128, 1] in [-1, 1], `files`, `classes`, `patients` (unicode arrays)
    and a format/version marker. `load_dataset`, `load_split` and `--data` accept the file in place of
    a data folder and give the same images (to float16 precision), flips added on load.
    """
    out_file = pathlib.Path(out_file)
    if out_file.suffix != ".npz":
        raise ValueError(f"the data cache must be an .npz file, got {out_file}")
    ds = load_dataset(path, classes=CLASSES, flip=False, cache=False)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    arrays = dict(
        format=np.array(CACHE_FORMAT), version=np.array(CACHE_FORMAT_VERSION),
        images=ds.images.astype(np.float16), files=ds.files.astype(str), classes=ds.classes.astype(str), patients=ds.patients.astype(str),
    )
    files_lib.write_atomic(out_file, lambda fh: np.savez_compressed(fh, **arrays))
    return out_file




def _load_cache_file(file, classes, flip, size):
    """Dataset of `classes` from an `export_cache` file (checked by `read_cache_file`), in the order the folder
    path gives, flips added like there."""
    z = read_cache_file(file, size)
    labels = z["classes"]
    index = np.concatenate([np.flatnonzero(labels == c) for c in classes])
    if not len(index):
        raise DataError(f"no image of {', '.join(classes)} in the data cache {file}; {HOW_TO_CACHE}")
    images = z["images"][index].astype(np.float32)  # [N, size, size, 1]
    ds = Dataset(images, z["files"][index], labels[index], z["patients"][index], np.zeros(len(index), bool))
    return _with_flips(ds) if flip else ds


def load_images(path=None, classes=("CT_COVID",), flip=True):
    """Scans of `classes` as float32 [N, 128, 128, 1] in [-1, 1] (doubled by a lateral flip)."""
    return load_dataset(path, classes=classes, flip=flip).images


def split_by_patient(patients, val_fraction=VAL_FRACTION, seed=SPLIT_SEED):
    """Seeded patient-level split -> (train_index, val_index); no patient is on both sides."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    patients = np.asarray(patients)
    unique = np.unique(patients)
    order = np.random.RandomState(seed).permutation(len(unique))
    n_val = max(1, int(round(len(unique) * val_fraction)))
    val_patients = set(unique[order[:n_val]])
    is_val = np.array([p in val_patients for p in patients])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def load_split(path=None, classes=("CT_COVID",), flip=True, val_fraction=VAL_FRACTION, seed=SPLIT_SEED):
    """(train, val) Datasets of `classes`, split at patient level over COVID + non-COVID patients.

    The split is drawn over all patients of both classes and then filtered to `classes`, so the GAN,
    the metrics' domain encoder and the widget all hold out the same patients for the same seed.
    """
    ds = load_dataset(path, classes=CLASSES, flip=flip)
    train_idx, val_idx = split_by_patient(ds.patients, val_fraction, seed)
    keep = np.isin(ds.classes, classes)
    return ds.subset(train_idx[keep[train_idx]]), ds.subset(val_idx[keep[val_idx]])


def load_folder(folder, size=IMAGE_SIZE):
    """Every image file in `folder` (any size/format), processed like the training data -> [N, size, size, 1]."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist; pass a folder of scans ({IMAGE_RULES})")
    images, skipped = [], []
    for name, read, n_bytes, _ in _folder_sources(folder):
        image, reason = _read_and_decode(name, read, n_bytes, size)
        (images.append(image) if image is not None else skipped.append((name, reason)))
    if skipped:
        warnings.warn(_skipped_message(skipped, folder), SkippedFilesWarning, stacklevel=2)
    if not images:
        raise DataError(f"no readable image in {folder}; put scans there ({IMAGE_RULES})")
    return np.stack(images)[..., None]  # [N, size, size, 1]


def describe(ds):
    """Short text summary of a Dataset."""
    n_pat = len(np.unique(ds.patients))
    by_class = ", ".join(f"{c} {int((ds.classes == c).sum())}" for c in np.unique(ds.classes).tolist())
    return f"{len(ds)} images ({by_class}), {n_pat} patients, range [{float(ds.images.min()):.2f}, {float(ds.images.max()):.2f}]"


def training_split(config, data_dir=None):
    """(train images, train labels, val images, val labels) for `config`: the shared patient-level split,
    then the `max_images` cap; labels are int32 indices into `config.classes`."""
    train_ds, val_ds = load_split(data_dir, config.classes, config.flip, config.val_fraction, config.split_seed)
    index = {name: i for i, name in enumerate(config.classes)}
    train, train_labels = train_ds.images, np.array([index[c] for c in train_ds.classes], np.int32)
    if config.max_images:
        keep = np.random.RandomState(config.seed).permutation(len(train))[: config.max_images]
        train, train_labels = train[keep], train_labels[keep]
    return train, train_labels, val_ds.images, np.array([index[c] for c in val_ds.classes], np.int32)


def training_images(config, data_dir=None):
    """(train images, val images) that samples are compared with: every class of `config.classes`, or for
    a conditional model the first class (its default when sampling; COVID in the shipped presets)."""
    train, train_labels, val, val_labels = training_split(config, data_dir)
    if config.conditional:
        return train[train_labels == 0], val[val_labels == 0]
    return train, val
