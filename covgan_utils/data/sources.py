"""Where the scans come from: the data search order (`--data`, $COVGAN_DATA, data/raw/, ../shared/data/covid-ct),
the listing of class folders and zips, patient ids from the metadata tables, the upstream download,
and the portable data cache (one .npz of the preprocessed scans).
"""
import contextlib
import csv
import hashlib
import os
import pathlib
import stat
import sys
import urllib.parse
import urllib.request
import zipfile
import zlib

import numpy as np

from covgan_utils.data.decoding import IMAGE_SIZE, DataError
from covgan_utils.util import paths

CLASSES = ("CT_COVID", "CT_NonCOVID")


METADATA = {  # class -> (csv file, file-name column, patient-id column)
    "CT_COVID": ("COVID-CT-MetaInfo.csv", "File name", "Patient ID"),
    "CT_NonCOVID": ("NonCOVID-CT-MetaInfo.csv", "image name", "patient id"),
}


UPSTREAM_BASE = "https://github.com/UCSD-AI4H/COVID-CT/raw/master/Images-processed/"


UPSTREAM_FILES = ("CT_COVID.zip", "CT_NonCOVID.zip")


HOW_TO_GET = (
    "get the COVID-CT scans with `python -m covgan_utils data download`, "
    "or point --data / $COVGAN_DATA at a folder holding CT_COVID/ and CT_NonCOVID/ (or their release zips)"
)


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


CACHE_FORMAT = "covgan-covid-ct-cache"  # marker of an `export_cache` file


CACHE_FORMAT_VERSION = 1


CACHE_FIELDS = ("format", "version", "images", "files", "classes", "patients")


CACHE_ARRAYS = ("images", "files", "classes", "patients")  # one row per image in every data cache


TEXT_ARRAYS = ("files", "classes", "patients")  # 1-D unicode arrays


RANGE_TOLERANCE = 1e-3  # images may exceed [-1, 1] by float16 rounding, no more


HOW_TO_CACHE = "make one with `python -m covgan_utils data export-cache OUT.npz [--data DIR]`"


NPZ_ERRORS = (OSError, ValueError, EOFError, RuntimeError, NotImplementedError, MemoryError, zipfile.BadZipFile, zlib.error)


@contextlib.contextmanager
def open_npz(file):
    """The NpzFile of `file` within the block, or None when it is no readable .npz (garbage, truncated, an .npy,
    pickled); the file is closed after the block either way."""
    with contextlib.ExitStack() as stack:
        yield _load_npz(file, stack)


def _load_npz(file, stack):
    try:
        z = np.load(stack.enter_context(open(file, "rb")), allow_pickle=False)  # an .npy gives an array, an .npz an NpzFile
    except NPZ_ERRORS:
        return None
    return stack.enter_context(z) if isinstance(z, np.lib.npyio.NpzFile) else None


def check_cache_file(file):
    """`file` when it is a sound data cache written by `export_cache`, else DataError naming it, the fault and how to make one."""
    read_cache_file(file, size=None)
    return pathlib.Path(file)


def read_cache_file(file, size=IMAGE_SIZE):
    """{name: array} of CACHE_ARRAYS in the `export_cache` file `file`, checked by `check_cache_arrays` (any
    square image size when `size` is None); DataError (one line, naming the file and HOW_TO_CACHE) otherwise."""
    file = pathlib.Path(file)
    with open_npz(file) as z:
        if z is None:
            raise DataError(f"{file} is not a COVID-CT data cache (not a readable .npz: truncated, damaged or another format; "
                            f"expected a data folder or an export-cache .npz); {HOW_TO_CACHE}")
        _check_marker(z, file)
        return check_cache_arrays(z, file, size, CACHE_ARRAYS, HOW_TO_CACHE)


def _check_marker(z, file):
    """DataError unless the NpzFile `z` carries the export-cache format marker and this code's format version."""
    if not {"format", "version"} <= set(z.files) or _scalar(z, "format", file) != CACHE_FORMAT:
        raise DataError(f"{file} is not a COVID-CT data cache (expected a data folder or an export-cache .npz); {HOW_TO_CACHE}")
    version = _scalar(z, "version", file)
    if version != str(CACHE_FORMAT_VERSION):
        raise DataError(f"{file} is a data cache of format version {version}, this code reads version {CACHE_FORMAT_VERSION}; {HOW_TO_CACHE}")


def _scalar(z, name, file):
    """The 0-d array `name` of `z` as text ('' when it is not a scalar)."""
    value = _member(z, name, file, HOW_TO_CACHE)
    return str(value) if value.ndim == 0 else ""


def _member(z, name, file, fix):
    """Array `name` of the NpzFile (or dict) `z`, read once; DataError when its bytes cannot be read."""
    try:
        return np.asarray(z[name])
    except NPZ_ERRORS as err:
        raise DataError(f"data cache {file} cannot be used: its array {name!r} cannot be read ({_one_line(err)}); {fix}") from None


def _one_line(err):
    return " ".join(str(err).split()) or type(err).__name__


def check_cache_arrays(z, file, size=IMAGE_SIZE, fields=CACHE_ARRAYS, fix=HOW_TO_CACHE):
    """{field: array} of the data cache `z` (NpzFile or dict), each read once, when they hold N >= 1 rows of
    finite images in [-1, 1] (float16/float32 [N, size, size, 1]; any square size for size None), 1-D unicode
    files/classes/patients, known classes and (when asked for) a 1-D bool `flipped`; else DataError naming
    `file`, the fault and `fix`."""
    present = set(getattr(z, "files", z))
    missing = [f for f in fields if f not in present]
    if missing:
        raise DataError(f"data cache {file} cannot be used: no {', '.join(missing)} array; {fix}")
    arrays = {f: _member(z, f, file, fix) for f in fields}
    problem = _cache_problem(arrays, size)
    if problem:
        raise DataError(f"data cache {file} cannot be used: {problem}; {fix}")
    return arrays


def _cache_problem(arrays, size):
    """What is wrong with the arrays of a data cache (one phrase), or None."""
    images = arrays["images"]
    if images.dtype not in (np.float16, np.float32):
        return f"images are {images.dtype}, expected float16 or float32"
    side = images.shape[1] if size is None and images.ndim == 4 else size
    if images.shape[1:] != (side, side, 1):
        expected = "[N, S, S, 1]" if size is None else f"[N, {size}, {size}, 1]"
        return f"images of shape {list(images.shape)}, expected {expected}"
    for name in (f for f in TEXT_ARRAYS if f in arrays):
        if arrays[name].ndim != 1 or arrays[name].dtype.kind != "U":
            return f"{name} is a {arrays[name].dtype} array of shape {list(arrays[name].shape)}, expected 1-D text (unicode)"
    if "flipped" in arrays and (arrays["flipped"].ndim != 1 or arrays["flipped"].dtype != bool):
        return f"flipped is a {arrays['flipped'].dtype} array of shape {list(arrays['flipped'].shape)}, expected 1-D bool"
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        return "arrays of different lengths: " + ", ".join(f"{name} {n}" for name, n in lengths.items())
    if not len(images):
        return "it holds no image (N = 0)"
    unknown = sorted(set(np.unique(arrays["classes"]).tolist()) - set(CLASSES))
    if unknown:
        return f"unknown class {', '.join(map(repr, unknown[:3]))} (expected {' or '.join(CLASSES)})"
    return _range_problem(images)


def _range_problem(images):
    """Non-finite values or values outside [-1, 1] (RANGE_TOLERANCE) in `images`, as a phrase, or None."""
    low, high = float(images.min()), float(images.max())  # NaN propagates through min/max
    if not (np.isfinite(low) and np.isfinite(high)):
        return "images hold NaN or infinite values"
    if low < -1 - RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        return f"images range [{low:.4g}, {high:.4g}], expected [-1, 1]"
    return None
