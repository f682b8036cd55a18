"""Bad-input corpus for tests/test_bad_inputs.py, built at test time (no binary file is committed).

`IMAGE_CASES` are single files dropped into a data folder next to good scans; `write_image_case`
writes one of them; `DECODED_CASES` names those the decoder may see; `header_pixels` is the width x height
an image file's header claims. `snapshot` fingerprints a folder (without reading FIFOs or following links) so a
test can check that nothing in the source data changed.
"""
import functools
import hashlib
import io
import json
import os
import pathlib
import stat
import zipfile

import cv2
import numpy as np

from covgan_utils.data import decoding

# id -> (file name, "loaded" | "skipped", text the SkippedFilesWarning gives as the reason)
IMAGE_CASES = {
    "zero-byte": ("zero.png", "skipped", "empty file, 0 bytes"),
    "corrupt-png-header": ("corrupt.png", "skipped", "damaged PNG header"),
    "corrupt-png-body": ("corrupt-body.png", "skipped", "damaged or truncated image data"),
    "truncated-png": ("truncated.png", "skipped", "damaged or truncated image data"),
    "truncated-jpeg": ("truncated.jpg", "skipped", "truncated JPEG (no end-of-image marker)"),
    "16-bit": ("sixteen.png", "loaded", None),
    "rgba": ("rgba.png", "loaded", None),
    "16-bit-rgba": ("sixteen-rgba.png", "loaded", None),
    "1x1": ("one.png", "skipped", "1x1 pixels, under the 8-pixel minimum side"),
    "huge-png-20000x20000": ("huge.png", "skipped", "20000x20000 pixels, over the 25,000,000-pixel limit"),
    "jpeg-header-65000x65000": ("bomb.jpg", "skipped", "65000x65000 pixels, over the 25,000,000-pixel limit"),
    "huge-tiff-20000x20000": ("huge.tiff", "skipped", "over the 25,000,000-pixel limit"),
    "float32-tiff": ("float.tiff", "skipped", "unsupported pixel type float32"),
    "text-as-png": ("notes.png", "skipped", "not an image"),
    "html-as-jpg": ("page.jpg", "skipped", "not an image"),
    "zip-as-png": ("archive.png", "skipped", "not an image"),
    "text-file": ("notes.txt", "skipped", "not an image file name"),
    "symlink-loop": ("loop.png", "skipped", "cannot be read: Too many levels of symbolic links"),
    "dangling-symlink": ("gone.png", "skipped", "cannot be read: No such file or directory"),
    "fifo": ("pipe.png", "skipped", "cannot be read: not a regular file"),
    "unreadable-chmod-000": ("locked.png", "skipped", "cannot be read: Permission denied"),
    "300-MB-file": ("big.png", "skipped", "314,572,800 bytes, over the 268,435,456-byte limit"),
}


# The cases whose bytes reach the decoder (cv2.imdecode), -> whether it returns pixels: their damage shows
# only in the decoded data (or its pixel type). Every other case is refused before any pixel is decoded,
# from its name, size, read error or header (the 20000x20000 files and the 65000x65000 JPEG among them).
DECODED_CASES = {
    "corrupt-png-body": False,
    "truncated-png": False,
    "16-bit": True,
    "rgba": True,
    "16-bit-rgba": True,
    "float32-tiff": True,
}


def scan(size=(160, 160), value=90):
    """A small gray 'scan' with a bright ellipse, uint8."""
    image = np.full(size, value, np.uint8)
    cv2.ellipse(image, (size[1] // 2, size[0] // 2), (size[1] // 4, size[0] // 3), 0, 0, 360, 200, -1)
    return image


def encode(array, ext=".png"):
    ok, buf = cv2.imencode(ext, array)
    assert ok
    return buf.tobytes()


@functools.lru_cache(maxsize=None)
def _pil_bytes(fmt, **save):
    """A 20000x20000 1-bit image (400 million pixels, a valid file of a few KB)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, fmt, **save)
    return buf.getvalue()


def huge_png():
    return _pil_bytes("PNG")


def huge_tiff():
    return _pil_bytes("TIFF", compression="group4")


def jpeg_bomb():
    """A valid 64x64 JPEG whose frame header claims 65000x65000 pixels (a decoder would allocate 4 GB)."""
    data = bytearray(encode(scan((64, 64)), ".jpg"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = (65000).to_bytes(2, "big") * 2
    return bytes(data)


def _zip_bytes():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.txt", "hello")
    return buf.getvalue()


def image_case_bytes(case):
    """Bytes of a regular-file case, or None for the cases that are not plain files."""
    good_png, good_jpg = encode(scan()), encode(scan(), ".jpg")
    return {
        "zero-byte": b"",
        "corrupt-png-header": b"\x89PNG\r\n\x1a\nnot really a png",
        "corrupt-png-body": good_png[:33] + bytes(range(256)) * 4 + good_png[-12:],
        "truncated-png": good_png[: len(good_png) // 2],
        "truncated-jpeg": good_jpg[: len(good_jpg) // 2],
        "16-bit": encode(scan().astype(np.uint16) * 257),
        "rgba": encode(np.dstack([scan()] * 3 + [np.full((160, 160), 255, np.uint8)])),
        "16-bit-rgba": encode(np.dstack([scan().astype(np.uint16) * 257] * 4)),
        "1x1": encode(np.zeros((1, 1), np.uint8)),
        "huge-png-20000x20000": huge_png(),
        "jpeg-header-65000x65000": jpeg_bomb(),
        "huge-tiff-20000x20000": huge_tiff(),
        "float32-tiff": encode(scan().astype(np.float32) / 255, ".tiff"),
        "text-as-png": b"these are my notes, not a scan\n" * 10,
        "html-as-jpg": b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n",
        "zip-as-png": _zip_bytes(),
        "text-file": b"notes\n",
    }.get(case)


def header_pixels(path):
    """Width x height that the header of the image file at `path` gives (no pixel decoded)."""
    width, height = decoding.image_header(pathlib.Path(path).read_bytes())
    return width * height


def write_image_case(folder, case):
    """Create case `case` of IMAGE_CASES in `folder`; returns its path."""
    name = IMAGE_CASES[case][0]
    path = pathlib.Path(folder) / name
    data = image_case_bytes(case)
    if data is not None:
        path.write_bytes(data)
    elif case == "symlink-loop":
        os.symlink(name, path)  # loop.png -> loop.png
    elif case == "dangling-symlink":
        os.symlink("no-such-file.png", path)
    elif case == "fifo":
        os.mkfifo(path)  # reading it would block forever
    elif case == "unreadable-chmod-000":
        path.write_bytes(encode(scan()))
        path.chmod(0)
    elif case == "300-MB-file":
        with open(path, "wb") as fh:  # sparse: no disk space used
            fh.truncate(300 * 2**20)
    else:
        raise KeyError(case)
    return path


def snapshot(folder):
    """{relative path: fingerprint} of everything under `folder`: sha256 of regular files (size and mtime of
    big ones), link targets, file types; never follows links or opens FIFOs."""
    folder = pathlib.Path(folder)
    out = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            path = pathlib.Path(root) / name
            st = path.lstat()
            key = str(path.relative_to(folder))
            if stat.S_ISLNK(st.st_mode):
                out[key] = ("link", os.readlink(path))
            elif stat.S_ISREG(st.st_mode) and st.st_size <= 16 * 2**20 and os.access(path, os.R_OK) and st.st_mode & 0o444:
                out[key] = ("file", hashlib.sha256(path.read_bytes()).hexdigest(), stat.S_IMODE(st.st_mode))
            elif stat.S_ISREG(st.st_mode):
                out[key] = ("file", st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))
            else:
                out[key] = (stat.filemode(st.st_mode)[0], stat.S_IMODE(st.st_mode))
    return out


def tfjs_export(folder):
    """A minimal exported widget folder: index.html and a model/model.json whose one weight shard exists."""
    folder = pathlib.Path(folder)
    (folder / "model").mkdir(parents=True)
    (folder / "index.html").write_text("<p>widget</p>\n")
    manifest = [{"paths": ["group1-shard1of1.bin"], "weights": [{"name": "w", "shape": [2], "dtype": "float32"}]}]
    (folder / "model" / "model.json").write_text(json.dumps({"format": "graph-model", "modelTopology": {"node": []}, "weightsManifest": manifest}))
    (folder / "model" / "group1-shard1of1.bin").write_bytes(np.zeros(2, np.float32).tobytes())
    return folder
