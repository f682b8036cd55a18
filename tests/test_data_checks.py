"""Data caches checked on load (issue "checked at the boundary"): a damaged user cache (`export_cache`, `--data`)
is refused with one `error:` line naming the file and the fix, a damaged project cache (data/processed/) is
rebuilt from the scans with one RebuiltCacheWarning; byte-identical scans share one patient; `describe` prints
plain text. Source files are never modified."""
import hashlib
import shutil
import warnings

import numpy as np
import pytest
from widget_fixtures import make_scans

from covgan_utils import cli
from covgan_utils.data import dataset, decoding, sources
from covgan_utils.util import paths


@pytest.fixture
def scans(tmp_path, monkeypatch):
    """Synthetic COVID + non-COVID scans (2 patients x 2 slices per class); the project cache lives in tmp."""
    monkeypatch.setattr(paths, "PROCESSED_DIR", tmp_path / "processed")
    return make_scans(tmp_path / "scans", n_patients=2, slices=2)


@pytest.fixture
def good_cache(scans, tmp_path):
    return dataset.export_cache(tmp_path / "good.npz", scans)


def _arrays(cache):
    with np.load(cache) as z:
        return dict(z)


def _with(arrays, **changes):
    return {**arrays, **changes}


def _damage(case, arrays):
    """The arrays of a good cache damaged as `case` says."""
    images = arrays["images"]
    if case == "nan":
        return _with(arrays, images=np.where(np.arange(images.size).reshape(images.shape) == 5, np.nan, images).astype(np.float16))
    if case == "inf":
        return _with(arrays, images=np.concatenate([images[:1] * 0 + np.inf, images[1:]]).astype(np.float16))
    if case == "range-0-255":
        return _with(arrays, images=np.linspace(0, 255, images.size).reshape(images.shape).astype(np.float32))
    if case == "range-300":
        return _with(arrays, images=(images.astype(np.float32) * 300))
    if case == "lengths":
        return _with(arrays, files=arrays["files"][:-1])
    if case == "missing-key":
        return {k: v for k, v in arrays.items() if k != "patients"}
    if case == "shape":
        return _with(arrays, images=images[:, :64, :64])
    if case == "integer":
        return _with(arrays, images=decoding.to_uint8(images))
    if case == "bytes-files":
        return _with(arrays, files=arrays["files"].astype("S"))
    if case == "unknown-class":
        return _with(arrays, classes=np.array(["CT_Other"] + list(arrays["classes"][1:])))
    if case == "empty":
        return {k: (v[:0] if v.ndim else v) for k, v in arrays.items()}
    raise AssertionError(case)


ARRAY_CASES = {  # case -> text the error line gives
    "nan": "images hold NaN or infinite values",
    "inf": "images hold NaN or infinite values",
    "range-0-255": "images range [0, 255], expected [-1, 1]",
    "range-300": "expected [-1, 1]",
    "lengths": "arrays of different lengths: images 8, files 7",
    "missing-key": "no patients array",
    "shape": "images of shape [8, 64, 64, 1]",
    "integer": "images are uint8, expected float16 or float32",
    "bytes-files": "files is a |S",
    "unknown-class": "unknown class 'CT_Other'",
    "empty": "holds no image (N = 0)",
}
FILE_CASES = {"truncated": "not a readable .npz", "random-bytes": "not a readable .npz", "pickled-files": "'files' cannot be read"}


def _bad_cache(case, good, tmp_path):
    bad = tmp_path / f"bad-{case}.npz"
    if case in ARRAY_CASES:
        np.savez_compressed(bad, **_damage(case, _arrays(good)))
    elif case == "truncated":
        data = good.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif case == "random-bytes":
        bad.write_bytes(np.random.RandomState(0).bytes(4096))
    elif case == "pickled-files":
        np.savez(bad, **_with(_arrays(good), files=_arrays(good)["files"].astype(object)))
    return bad


def _sha(file):
    return hashlib.sha256(file.read_bytes()).hexdigest()


@pytest.mark.parametrize("case", list(ARRAY_CASES) + list(FILE_CASES))
def test_damaged_user_cache_is_refused_in_one_line(case, good_cache, tmp_path, capfd):
    bad = _bad_cache(case, good_cache, tmp_path)
    before = _sha(bad)
    code = cli.main(["data", "describe", "--data", str(bad)])
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and out == "", err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and str(bad) in lines[0]
    assert {**ARRAY_CASES, **FILE_CASES}[case] in lines[0], lines[0]
    assert "export-cache" in lines[0]  # the fix: HOW_TO_CACHE
    assert _sha(bad) == before


@pytest.mark.parametrize("case", ["nan", "range-0-255", "lengths", "truncated", "empty"])
def test_damaged_user_cache_is_refused_by_every_reader(case, good_cache, tmp_path):
    bad = _bad_cache(case, good_cache, tmp_path)
    for read in (sources.check_cache_file, sources.find_data_dir, dataset.load_dataset, dataset.load_split):
        with pytest.raises(decoding.DataError, match="export-cache") as raised:
            read(bad)
        assert str(bad) in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(decoding.DataError, match="export-cache"):
        dataset._load_cache_file(bad, sources.CLASSES, False, decoding.IMAGE_SIZE)


def test_damaged_user_cache_is_refused_by_train(good_cache, tmp_path, capfd):
    bad = _bad_cache("nan", good_cache, tmp_path)
    code = cli.main(["train", "--preset", "smoke", "--data", str(bad), "--run-dir", str(tmp_path / "run")])
    err = capfd.readouterr().err
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "NaN" in err and str(bad) in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_good_cache_still_loads(good_cache, scans, capfd):
    assert sources.check_cache_file(good_cache) == good_cache
    ds = dataset.load_dataset(good_cache, classes=sources.CLASSES, flip=False)
    fresh = dataset.load_dataset(scans, classes=sources.CLASSES, flip=False, cache=False)
    np.testing.assert_allclose(ds.images, fresh.images, atol=5e-4)
    np.testing.assert_array_equal(ds.patients, fresh.patients)
    assert cli.main(["data", "describe", "--data", str(good_cache)]) == 0
    assert "16 images (CT_COVID 8, CT_NonCOVID 8), 4 patients" in capfd.readouterr().out  # flips added


def test_float16_rounding_is_within_range(good_cache, tmp_path):
    arrays = _arrays(good_cache)
    edge = np.full_like(arrays["images"], np.float16(1.0) + np.finfo(np.float16).eps)  # one float16 step above 1
    np.savez(tmp_path / "edge.npz", **_with(arrays, images=edge))
    assert sources.check_cache_file(tmp_path / "edge.npz") == tmp_path / "edge.npz"


# ---------------------------------------------------------------- the project's own cache (data/processed/)

def _project_cache():
    (cache,) = paths.PROCESSED_DIR.glob("covid-ct-*.npz")
    return cache


def _truncate(cache):
    data = cache.read_bytes()
    cache.write_bytes(data[: len(data) // 3])


def _rewrite(cache, **changes):
    np.savez(cache, **_with(_arrays(cache), **changes))


PROJECT_DAMAGE = {
    "truncated": _truncate,
    "random-bytes": lambda c: c.write_bytes(b"PK\x03\x04" + bytes(100)),
    "nan": lambda c: _rewrite(c, images=_arrays(c)["images"] * np.nan),
    "range": lambda c: _rewrite(c, images=(_arrays(c)["images"] + 1) * 127.5),
    "lengths": lambda c: _rewrite(c, patients=_arrays(c)["patients"][:-1]),
    "no-flipped": lambda c: np.savez(c, **{k: v for k, v in _arrays(c).items() if k != "flipped"}),
    "flipped-not-bool": lambda c: _rewrite(c, flipped=_arrays(c)["flipped"].astype(np.int8)),
}


@pytest.mark.parametrize("case", list(PROJECT_DAMAGE))
def test_damaged_project_cache_is_rebuilt_with_one_warning(case, scans):
    fresh = dataset.load_dataset(scans, classes=sources.CLASSES, cache=False)
    dataset.load_dataset(scans, classes=sources.CLASSES)
    cache = _project_cache()
    PROJECT_DAMAGE[case](cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = dataset.load_dataset(scans, classes=sources.CLASSES)
    messages = [str(w.message) for w in caught if issubclass(w.category, decoding.RebuiltCacheWarning)]
    assert len(messages) == 1 and len(caught) == 1, [str(w.message) for w in caught]
    assert str(cache) in messages[0] and "rebuilding it from the scans" in messages[0] and "\n" not in messages[0]
    for field in ("images", "files", "classes", "patients", "flipped"):
        np.testing.assert_array_equal(getattr(ds, field), getattr(fresh, field))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt cache is sound: no warning the next time
        again = dataset.load_dataset(scans, classes=sources.CLASSES)
    np.testing.assert_array_equal(again.images, fresh.images)


# ---------------------------------------------------------------- duplicate scans

def test_byte_identical_scans_share_one_patient(scans):
    shutil.copyfile(scans / "CT_COVID" / "pat00_0.png", scans / "CT_COVID" / "zcopy_0.png")  # same class, another "patient"
    shutil.copyfile(scans / "CT_COVID" / "pat01_1.png", scans / "CT_NonCOVID" / "zz_9.png")  # across classes
    before = {p: _sha(p) for p in scans.rglob("*.png")}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = dataset.load_dataset(scans, classes=sources.CLASSES, flip=True, cache=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, decoding.DuplicateScansWarning)]
    assert len(messages) == 1 and len(caught) == 1
    assert messages[0].startswith("2 scan file(s)") and "\n" not in messages[0]
    assert "CT_COVID/zcopy_0.png = CT_COVID/pat00_0.png" in messages[0] and "CT_NonCOVID/zz_9.png = CT_COVID/pat01_1.png" in messages[0]
    assert len(ds) == 2 * 10  # every copy kept, flips added
    patient = dict(zip(ds.files, ds.patients))
    assert patient["zcopy_0.png"] == patient["pat00_0.png"] == "CT_COVID/pat00"
    assert patient["zz_9.png"] == patient["pat01_1.png"] == "CT_COVID/pat01"
    for seed in range(5):
        train, val = dataset.split_by_patient(ds.patients, 0.5, seed)
        side = {f: "train" for f in ds.files[train]} | {f: "val" for f in ds.files[val]}
        assert side["zcopy_0.png"] == side["pat00_0.png"] and side["zz_9.png"] == side["pat01_1.png"]
    assert {p: _sha(p) for p in scans.rglob("*.png")} == before


def test_distinct_scans_give_no_duplicate_warning(scans):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = dataset.load_dataset(scans, classes=sources.CLASSES, flip=False, cache=False)
    assert len(np.unique(ds.patients)) == 4


def test_describe_prints_plain_text(scans):
    text = dataset.describe(dataset.load_dataset(scans, classes=sources.CLASSES, flip=False, cache=False))
    assert text.startswith("8 images (CT_COVID 4, CT_NonCOVID 4), 4 patients, range [")
    assert "np." not in text and "{" not in text
