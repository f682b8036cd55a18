"""Decoding and preprocessing one scan: header checks before decoding (PNG, JPEG, BMP, TIFF), grayscale,
128x128 area resize, [-1, 1]; the errors and warnings of the data layer.
"""
import io
import pathlib
import struct
import warnings
import zipfile
import zlib

import cv2
import numpy as np

from covgan_utils.util import console

IMAGE_SIZE = 128


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


# Images are checked from their header before any pixel is decoded: width x height over MAX_IMAGE_PIXELS
# (a 20000x20000 PNG compresses to a few KB and would decode to 400 MB) or a side under MIN_IMAGE_SIDE
# (no scan in it; a 1x1 file would become a flat 128x128 image) are skipped like unreadable files.
# The COVID-CT scans range from 148x61 to 1637x1225 pixels.
MAX_IMAGE_PIXELS = 25_000_000


MIN_IMAGE_SIDE = 8


MAX_FILE_BYTES = 256 * 2**20  # larger files (or zip members) are skipped unread


IMAGE_RULES = f"PNG, JPEG, BMP or TIFF, 8- or 16-bit, sides of at least {MIN_IMAGE_SIDE} px, at most {MAX_IMAGE_PIXELS:,} pixels"


class DataError(ValueError):
    """Raised when the dataset cannot be found or holds no usable image."""


class SkippedFilesWarning(UserWarning):
    """Warned once per load, naming the files that could not be decoded."""


class DuplicateScansWarning(UserWarning):
    """Warned once per load, naming byte-identical scan files (each copy gets the patient of its first occurrence)."""


class RebuiltCacheWarning(UserWarning):
    """Warned when the project's own data cache (data/processed/) is damaged and rebuilt from the scans."""


READ_ERRORS = (OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error)  # a file or zip member that cannot be read


def _read_source(name, read, n_bytes):
    """(bytes or None, reason or None) for one source entry: name and size checked, bytes read."""
    if pathlib.PurePath(name).suffix.lower() not in IMAGE_EXTENSIONS:
        return None, f"not an image file name ({', '.join(IMAGE_EXTENSIONS)})"
    if n_bytes is not None and n_bytes > MAX_FILE_BYTES:
        return None, f"{n_bytes:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit (covgan_utils.data.decoding.MAX_FILE_BYTES); not read"
    try:
        return read(), None
    except READ_ERRORS as err:
        return None, f"cannot be read: {' '.join(str(err.strerror if isinstance(err, OSError) and err.strerror else err).split())}"


def _read_and_decode(name, read, n_bytes, size):
    """(image or None, reason or None) for one source entry: read by `_read_source`, header checked, decoded."""
    blob, reason = _read_source(name, read, n_bytes)
    return (None, reason) if blob is None else check_image(blob, size)


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
        return f"over the {MAX_IMAGE_PIXELS:,}-pixel limit (covgan_utils.data.decoding.MAX_IMAGE_PIXELS); not decoded"
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
        return None, f"{width}x{height} pixels, over the {MAX_IMAGE_PIXELS:,}-pixel limit (covgan_utils.data.decoding.MAX_IMAGE_PIXELS); not decoded"
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
