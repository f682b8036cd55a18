"""COVID-CT data: locate, decode, preprocess (128x128, [-1, 1]), cache, split by patient, download,
and the portable data cache (one .npz of the preprocessed scans that travels instead of the raw ones)."""
import csv
import dataclasses
import hashlib
import io
import json
import os
import pathlib
import stat
import struct
import sys
import urllib.parse
import urllib.request
import warnings
import zipfile
import zlib

import cv2
import numpy as np

from covgan_utils import console
from covgan_utils import files as files_lib
from covgan_utils import paths

IMAGE_SIZE = 128
CLASSES = ("CT_COVID", "CT_NonCOVID")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Images are checked from their header before any pixel is decoded: width x height over MAX_IMAGE_PIXELS
# (a 20000x20000 PNG compresses to a few KB and would decode to 400 MB) or a side under MIN_IMAGE_SIDE
# (no scan in it; a 1x1 file would become a flat 128x128 image) are skipped like unreadable files.
# The COVID-CT scans range from 148x61 to 1637x1225 pixels.
MAX_IMAGE_PIXELS = 25_000_000
MIN_IMAGE_SIDE = 8
MAX_FILE_BYTES = 256 * 2**20  # larger files (or zip members) are skipped unread
IMAGE_RULES = f"PNG, JPEG, BMP or TIFF, 8- or 16-bit, sides of at least {MIN_IMAGE_SIDE} px, at most {MAX_IMAGE_PIXELS:,} pixels"
METADATA = {  # class -> (csv file, file-name column, patient-id column)
    "CT_COVID": ("COVID-CT-MetaInfo.csv", "File name", "Patient ID"),
    "CT_NonCOVID": ("NonCOVID-CT-MetaInfo.csv", "image name", "patient id"),
}
UPSTREAM_BASE = "https://github.com/UCSD-AI4H/COVID-CT/raw/master/Images-processed/"
UPSTREAM_FILES = ("CT_COVID.zip", "CT_NonCOVID.zip")
CACHE_VERSION = 1
HOW_TO_GET = (
    "get the COVID-CT scans with `python -m covgan_utils data download`, "
    "or point --data / $COVGAN_DATA at a folder holding CT_COVID/ and CT_NonCOVID/ (or their release zips)"
)
CACHE_FORMAT = "covgan-covid-ct-cache"  # marker of an `export_cache` file
CACHE_FORMAT_VERSION = 1
CACHE_FIELDS = ("format", "version", "images", "files", "classes", "patients")
HOW_TO_CACHE = "make one with `python -m covgan_utils data export-cache OUT.npz [--data DIR]`"


class DataError(ValueError):
    """Raised when the dataset cannot be found or holds no usable image."""


class SkippedFilesWarning(UserWarning):
    """Warned once per load, naming the files that could not be decoded."""


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


# ---------------------------------------------------------------- locating

def _has_data(folder):
    folder = pathlib.Path(folder)
    return any((folder / c).is_dir() or (folder / f"{c}.zip").is_file() for c in CLASSES)


def find_data_dir(path=None):
    """First data folder of: `path`, $COVGAN_DATA, data/raw/, ../shared/data/covid-ct.

    `path` or $COVGAN_DATA may also name a data cache file written by `export_cache` (returned as is).
    """
    if path is not None:
        path = pathlib.Path(path).expanduser()
        if not path.exists() and path.suffix == ".npz":
            raise DataError(f"data cache {path} does not exist; {HOW_TO_CACHE}")
        if not path.exists():
            raise DataError(f"data folder {path} does not exist; {HOW_TO_GET}")
        if path.is_file():
            return check_cache_file(path)
        if not _has_data(path):
            raise DataError(f"data folder {path} holds no CT_COVID/ or CT_NonCOVID/ (nor their zips); {HOW_TO_GET}")
        return path
    candidates = []
    if os.environ.get("COVGAN_DATA"):
        candidates.append(pathlib.Path(os.environ["COVGAN_DATA"]).expanduser())
    candidates += [paths.RAW_DIR, paths.SHARED_DATA_DIR, pathlib.Path.cwd().parent / "shared" / "data" / "covid-ct"]
    for folder in candidates:
        if folder.is_file():  # only $COVGAN_DATA can name a file
            return check_cache_file(folder)
        if folder.is_dir() and _has_data(folder):
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(f"no COVID-CT data found (looked in {tried}); {HOW_TO_GET}")


def _list_sources(data_dir, cls):
    """[(name, reader, size, stamp)] for the images of one class, from its folder or its zip."""
    folder, archive = data_dir / cls, data_dir / f"{cls}.zip"
    if folder.is_dir():
        return _folder_sources(folder)
    if archive.is_file():
        try:
            zf = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError) as err:
            raise DataError(f"{archive} is not a readable zip file ({err}); download it again with `python -m covgan_utils data download` "
                            f"or unpack the scans into {folder}/") from None
        infos = sorted((i for i in zf.infolist() if not i.is_dir() and "__MACOSX" not in i.filename), key=lambda i: i.filename)
        infos = [i for i in infos if not pathlib.PurePosixPath(i.filename).name.startswith(".")]
        return [(pathlib.PurePosixPath(i.filename).name, (lambda i=i: zf.read(i)), i.file_size, i.CRC) for i in infos]
    raise DataError(f"no {cls}/ folder or {cls}.zip in {data_dir}; {HOW_TO_GET}")


def _folder_sources(folder):
    """[(name, reader, size, mtime)] for the entries of `folder` that are not folders or hidden, sorted by name.
    Entries that are not regular files (dangling links, symlink loops, FIFOs) are listed too: their reader
    raises OSError, so they are skipped with the unreadable files instead of vanishing (or blocking a read)."""
    sources = []
    for p in sorted(q for q in folder.iterdir() if not q.name.startswith(".") and not q.is_dir()):
        try:
            st = p.stat()  # follows links: raises for loops and dangling links
        except OSError as err:
            sources.append((p.name, _raiser(err), None, None))
            continue
        if not stat.S_ISREG(st.st_mode):
            sources.append((p.name, _raiser(OSError(f"not a regular file (mode {stat.filemode(st.st_mode)})")), None, None))
            continue
        sources.append((p.name, p.read_bytes, st.st_size, st.st_mtime_ns))
    return sources


def _raiser(err):
    def read():
        raise err
    return read


READ_ERRORS = (OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error)  # a file or zip member that cannot be read


def _read_and_decode(name, read, n_bytes, size):
    """(image or None, reason or None) for one source entry: name and size checked, bytes read, header checked, decoded."""
    if pathlib.PurePath(name).suffix.lower() not in IMAGE_EXTENSIONS:
        return None, f"not an image file name ({', '.join(IMAGE_EXTENSIONS)})"
    if n_bytes is not None and n_bytes > MAX_FILE_BYTES:
        return None, f"{n_bytes:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit (data.MAX_FILE_BYTES); not read"
    try:
        blob = read()
    except READ_ERRORS as err:
        return None, f"cannot be read: {' '.join(str(err.strerror if isinstance(err, OSError) and err.strerror else err).split())}"
    return check_image(blob, size)


def _skipped_message(skipped, where):
    """One line for a SkippedFilesWarning: each file with its reason, then the fix."""
    listed = ", ".join(f"{name} ({reason})" for name, reason in skipped)
    return f"skipped {len(skipped)} unreadable file(s) in {where}: {listed}; remove or replace them ({IMAGE_RULES})"


# ---------------------------------------------------------------- decoding

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0..SOF15 (not DHT, JPG, DAC)


def _jpeg_header(data):
    """(width, height, complete) from the first frame header of JPEG bytes, complete meaning an end-of-image
    marker follows the first scan (a truncated file has none); None if the markers before the scan are damaged."""
    i, n, dims = 2, len(data), None
    while i + 4 <= n:
        if data[i] != 0xFF:  # stray bytes between segments: skipped, as libjpeg does
            i = data.find(b"\xff", i)
            if i < 0:
                return None
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker == 0xD9:  # end of image before any scan
            return None
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if length < 2:
            return None
        if marker in JPEG_FRAME_MARKERS:
            if i + 9 > n:
                return None
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            dims = (width, height)
        if marker == 0xDA:  # start of scan: entropy-coded data (0xFF always stuffed) up to the end-of-image marker
            return None if dims is None else dims + (b"\xff\xd9" in data[i + 2 + length:],)
        i += 2 + length
    return None


def image_header(data):
    """(width, height) read from the header of image bytes without decoding any pixel, or a reason string
    (str) when the header is missing or damaged. PNG and JPEG are parsed here; other formats (BMP, TIFF, ...)
    by PIL's lazy `Image.open`, which reads the header only."""
    if data[:8] == PNG_SIGNATURE:
        if len(data) < 24 or data[12:16] != b"IHDR":
            return "damaged PNG header"
        return struct.unpack(">II", data[16:24])
    if data[:3] == b"\xff\xd8\xff":
        header = _jpeg_header(data)
        if header is None:
            return "damaged JPEG header"
        if not header[2]:
            return "truncated JPEG (no end-of-image marker)"
        return header[:2]
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: the size is checked by the caller
            with Image.open(io.BytesIO(data)) as im:
                return tuple(im.size)
    except Image.DecompressionBombError:
        return f"over the {MAX_IMAGE_PIXELS:,}-pixel limit (data.MAX_IMAGE_PIXELS); not decoded"
    except Exception:  # noqa: BLE001  (PIL raises many types on damaged headers)
        return "not an image (no PNG, JPEG, BMP or TIFF header)"


def check_image(data, size=IMAGE_SIZE):
    """Bytes of an image file -> (float32 [size, size] in [-1, 1], None), or (None, reason) when the file is
    empty, not an image, damaged or truncated, of an unsupported pixel type, or outside the size limits
    (MIN_IMAGE_SIDE, MAX_IMAGE_PIXELS: checked from the header, before decoding). Never raises on bad bytes."""
    if not data:
        return None, "empty file, 0 bytes"
    data = data if isinstance(data, bytes) else bytes(data)
    header = image_header(data)
    if isinstance(header, str):
        return None, header
    width, height = header
    if width * height > MAX_IMAGE_PIXELS:
        return None, f"{width}x{height} pixels, over the {MAX_IMAGE_PIXELS:,}-pixel limit (data.MAX_IMAGE_PIXELS); not decoded"
    if min(width, height) < MIN_IMAGE_SIDE:
        return None, f"{width}x{height} pixels, under the {MIN_IMAGE_SIDE}-pixel minimum side (data.MIN_IMAGE_SIDE)"
    try:
        with console.quiet_stderr():  # libpng/libjpeg messages: a damaged file is reported once, with its name
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        return None, "damaged or truncated image data"
    if image.dtype not in (np.uint8, np.uint16):
        return None, f"unsupported pixel type {image.dtype} (8- or 16-bit images only)"
    return preprocess(image, size), None


def decode_image(data, size=IMAGE_SIZE):
    """Bytes of a PNG/JPEG (gray, RGB, RGBA, 8/16-bit) -> float32 [size, size] in [-1, 1], or None when
    `check_image` refuses them (it gives the reason)."""
    return check_image(data, size)[0]


def preprocess(image, size=IMAGE_SIZE):
    """Array as OpenCV decodes it -> grayscale, area-resized, float32 [size, size] in [-1, 1]."""
    if image.dtype == np.uint8:
        scale = 255.0
    elif image.dtype == np.uint16:
        scale = 65535.0
    else:
        raise DataError(f"unsupported pixel type {image.dtype}")
    image = image.astype(np.float32) / scale  # [H, W(, C)] in [0, 1]
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    elif image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif image.ndim == 3:
        image = image[:, :, 0]
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)  # [size, size]
    return np.clip(image * 2.0 - 1.0, -1.0, 1.0).astype(np.float32)


def to_uint8(images):
    """[..., H, W(, 1)] in [-1, 1] -> uint8 in [0, 255]."""
    return np.clip(np.rint((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- metadata

def read_patient_ids(data_dir, cls):
    """{file name as in this copy: patient id} from the class's metadata CSV ('%' read as '_')."""
    name, file_col, patient_col = METADATA[cls]
    table = pathlib.Path(data_dir) / name
    if not table.is_file():
        return {}
    with open(table, encoding="latin-1", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {r[file_col].strip().replace("%", "_"): r[patient_col].strip() for r in rows if r.get(file_col) and r.get(patient_col)}


def _fallback_patient(file_name):
    """Patient key for a file with no metadata: the stem up to its slice index ('x_3.png' -> 'x')."""
    stem = pathlib.PurePath(file_name).stem.replace("%", "_")
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


# ---------------------------------------------------------------- loading

def _cache_key(data_dir, classes, flip, size, listing):
    blob = json.dumps([CACHE_VERSION, str(pathlib.Path(data_dir).resolve()), list(classes), flip, size, listing])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _decode_class(data_dir, cls, size):
    sources = _list_sources(data_dir, cls)
    patient_of = read_patient_ids(data_dir, cls)
    images, files, skipped = [], [], []
    for name, read, n_bytes, _ in sources:
        image, reason = _read_and_decode(name, read, n_bytes, size)
        if image is None:
            skipped.append((name, reason))
            continue
        images.append(image)
        files.append(name)
    patients = [f"{cls}/{patient_of.get(f) or _fallback_patient(f)}" for f in files]
    return images, files, patients, skipped


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
        with np.load(cache_file, allow_pickle=False) as z:
            return Dataset(z["images"], z["files"], z["classes"], z["patients"], z["flipped"])
    images, files, labels, patients, skipped = [], [], [], [], []
    for cls in classes:
        i, f, p, s = _decode_class(data_dir, cls, size)
        images += i
        files += f
        patients += p
        labels += [cls] * len(f)
        skipped += [(f"{cls}/{name}", reason) for name, reason in s]
    if skipped:
        warnings.warn(_skipped_message(skipped, data_dir), SkippedFilesWarning, stacklevel=2)
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


def check_cache_file(file):
    """`file` when it is a data cache written by `export_cache`, else DataError naming it and how to make one."""
    file = pathlib.Path(file)
    ok, version = False, None
    try:
        z = np.load(file, allow_pickle=False)  # an .npy gives an array, an .npz an NpzFile
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        z = None
    if isinstance(z, np.lib.npyio.NpzFile):
        with z:
            ok = set(CACHE_FIELDS) <= set(z.files) and str(z["format"]) == CACHE_FORMAT
            version = int(z["version"]) if ok else None
    if not ok:
        raise DataError(f"{file} is not a COVID-CT data cache (expected a data folder or an export-cache .npz); {HOW_TO_CACHE}")
    if version != CACHE_FORMAT_VERSION:
        raise DataError(f"{file} is a data cache of format version {version}, this code reads version {CACHE_FORMAT_VERSION}; {HOW_TO_CACHE}")
    return file


def _load_cache_file(file, classes, flip, size):
    """Dataset of `classes` from an `export_cache` file, in the order the folder path gives, flips added like there."""
    with np.load(check_cache_file(file), allow_pickle=False) as z:
        labels = z["classes"]
        index = np.concatenate([np.flatnonzero(labels == c) for c in classes])
        images = z["images"][index].astype(np.float32)  # [N, size, size, 1]
        files, patients = z["files"][index], z["patients"][index]
    if images.shape[1:] != (size, size, 1):
        raise DataError(f"{file} holds {images.shape[1]}x{images.shape[2]} images, {size}x{size} requested")
    if not len(images):
        raise DataError(f"no image of {', '.join(classes)} in the data cache {file}; {HOW_TO_CACHE}")
    ds = Dataset(images, files, labels[index], patients, np.zeros(len(index), bool))
    return _with_flips(ds) if flip else ds


def load_images(path=None, classes=("CT_COVID",), flip=True):
    """Scans of `classes` as float32 [N, 128, 128, 1] in [-1, 1] (doubled by a lateral flip)."""
    return load_dataset(path, classes=classes, flip=flip).images


def split_by_patient(patients, val_fraction=0.2, seed=0):
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


def load_split(path=None, classes=("CT_COVID",), flip=True, val_fraction=0.2, seed=0):
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


# ---------------------------------------------------------------- download

def sha256_of(file):
    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(dest=None, base_url=UPSTREAM_BASE, files=UPSTREAM_FILES, sha256=None, progress=True):
    """Fetch the release zips into `dest` (default data/raw/) with a progress bar and SHA-256 check.

    `sha256` maps file name -> expected hex digest. Files without an expected digest are checked
    against `<dest>/SHA256SUMS` from an earlier download when present, and recorded there otherwise.
    """
    dest = pathlib.Path(dest or paths.RAW_DIR)
    dest.mkdir(parents=True, exist_ok=True)
    sums_file = dest / "SHA256SUMS"
    recorded = _read_sums(sums_file)
    expected = {**recorded, **(sha256 or {})}
    for name in files:
        url = urllib.parse.urljoin(base_url, name)
        _check_url(url)
        target = dest / name
        tmp = target.with_suffix(target.suffix + ".part")
        _fetch(url, tmp, progress)
        digest = sha256_of(tmp)
        if name in expected and expected[name] != digest:
            tmp.unlink()
            raise DataError(f"SHA-256 mismatch for {url}: expected {expected[name]}, got {digest}; file discarded")
        os.replace(tmp, target)
        recorded[name] = digest
    sums_file.write_text("".join(f"{d}  {n}\n" for n, d in sorted(recorded.items())))
    return [dest / n for n in files]


def _check_url(url):
    parts = urllib.parse.urlparse(url)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise DataError(f"refusing to download over {parts.scheme or 'no scheme'}: {url} (HTTPS only)")


def _fetch(url, target, progress):
    import tqdm

    with urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with open(target, "wb") as fh, tqdm.tqdm(total=total, unit="B", unit_scale=True, desc=pathlib.Path(target).stem, disable=not progress, file=sys.stderr) as bar:
            for block in iter(lambda: response.read(1 << 16), b""):
                fh.write(block)
                bar.update(len(block))


def _read_sums(file):
    if not file.is_file():
        return {}
    pairs = (line.split() for line in file.read_text().splitlines() if line.strip())
    return {name: digest for digest, name in pairs}


def describe(ds):
    """Short text summary of a Dataset."""
    n_pat = len(np.unique(ds.patients))
    by_class = {c: int((ds.classes == c).sum()) for c in np.unique(ds.classes)}
    return f"{len(ds)} images ({by_class}), {n_pat} patients, range [{ds.images.min():.2f}, {ds.images.max():.2f}]"

