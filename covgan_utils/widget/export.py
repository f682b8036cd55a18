"""Latent-space widget: export the autoencoder's decoder to TF.js next to a static page.

`export_widget()` writes a self-contained folder (default exports/latent_widget/):
    index.html, widget.js, widget.css   the page (sources in widget/page/)
    vendor/                             tf.min.js, three.module.min.js, TrackballControls.js (from widget/node_modules)
    model/                              model.json + weight shards (TF.js graph model of the decoder)
    points.json, thumbs.png             the latent map (format: `covgan_utils.widget.schema`), 32x32 thumbnail sprite
    latents.npz                         the same latent points at full precision, with the scans' patients

It reads its inputs (the autoencoder run, the GAN runs) and writes only into its output folder. The steps,
each a function of this module: `resolve_inputs` (find, load and check everything read, before any work),
`encode_map` (latent points of real and generated scans), `project_overlay` (with `ProjectionOptions`:
validation scans and progressions projected into a GAN generator, `covgan_utils.inversion.projection`),
`build_points` (points.json through the schema), `write_decoder` (TF.js), `write_points` and `write_page`.

The decoder goes Keras 3 -> SavedModel (`model.export`) -> `tensorflowjs_converter` (graph model), run as a
subprocess from its own virtual environment (.venv-tfjs/, made by `make install-widget`): the converter
needs protobuf 6.31.1, which TensorFlow 2.19 in the main environment does not accept (see docs/WIDGET.md).
"""
import dataclasses
import html
import json
import math
import os
import pathlib
import shutil
import subprocess
import tempfile

import numpy as np

from covgan_utils import config as config_lib
from covgan_utils import runs
from covgan_utils.data import decoding, sources
from covgan_utils.inversion import projection as projection_lib
from covgan_utils.util import fields, files, paths
from covgan_utils.widget import autoencoder, schema

WIDGET_DIR = paths.PROJECT_ROOT / "widget"


PAGE_DIR = WIDGET_DIR / "page"


NODE_MODULES = WIDGET_DIR / "node_modules"


DEFAULT_OUT = schema.DEFAULT_OUT


THUMB = 32  # thumbnail side in the sprite


SPRITE_COLS = 64


VENDOR = {  # file in the export -> file in node_modules
    "vendor/tf.min.js": "@tensorflow/tfjs/dist/tf.min.js",
    "vendor/three.module.min.js": "three/build/three.module.min.js",
    "vendor/TrackballControls.js": "three/examples/jsm/controls/TrackballControls.js",
}


CDN = "https://cdn.jsdelivr.net/npm/"


MODES = ("linear", "slerp")


# ---------------------------------------------------------------- options and inputs

@fields.checked(frozen=True)
class ProjectionOptions:
    """What the export projects into a GAN generator, and how; checked on creation (one-line ValueErrors).

    `project`: N validation scans (evenly spaced over the split; all of them when there are fewer).
    `progression`: pairs (A, B), each a scan file, a real scan's index in points.json or its file name;
    both are projected and `path_steps` latents walked between them (`mode` "linear" or "slerp").
    `generator`: a Keras generator or a GAN run designator (`covgan_utils.runs`; None = `release`).
    `steps`, `starts`, `features`, `seed` go to `projection.project` (num_steps, starts, features, seed)."""

    LABEL = "projection option"

    project: int = fields.field(0, fields.Int(0, 10**6))  # how many validation scans to project
    progression: tuple = fields.field((), fields.Anything())  # pairs, normalised by check_together
    generator: object = fields.field(None, fields.Anything())
    steps: int = fields.field(300, fields.Int(5, 10**6))
    starts: int = fields.field(4, fields.Int(1, 1000))
    path_steps: int = fields.field(8, fields.Int(2, 10**4))  # frames on a progression, both ends included
    mode: str = fields.field("linear", fields.Choice(*MODES))
    features: str = fields.field("domain", fields.Text(optional=True))
    seed: int = fields.field(0, config_lib.SEED)

    def check_together(self):
        object.__setattr__(self, "progression", _pairs(self.progression))

    @property
    def active(self):
        """Whether anything is projected."""
        return bool(self.project or self.progression)

    def project_kwargs(self, verbose=0):
        """Keyword arguments of `projection.project`."""
        return {"num_steps": self.steps, "starts": self.starts, "features": self.features, "seed": self.seed, "progress": verbose > 0}


def _pairs(progression):
    """One pair (a, b) or a list of pairs -> a tuple of pairs; anything else is a one-line ValueError."""
    if progression is None or (isinstance(progression, (list, tuple)) and not len(progression)):
        return ()
    if isinstance(progression, (list, tuple)) and len(progression) == 2 and not any(isinstance(x, (list, tuple)) for x in progression):
        progression = [progression]
    for pair in progression:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"a progression is a pair (scan A, scan B), got {pair!r}; pass two scans per progression")
    return tuple(tuple(pair) for pair in progression)


def projection_options(projection):
    """None, a dict of `ProjectionOptions` fields or a `ProjectionOptions` -> a `ProjectionOptions`."""
    if projection is None:
        return ProjectionOptions()
    if isinstance(projection, ProjectionOptions):
        return projection
    if isinstance(projection, dict):
        known = {f.name for f in dataclasses.fields(ProjectionOptions)}
        unknown = sorted(set(projection) - known)
        if unknown:
            raise ValueError(f"unknown projection option(s) {unknown}; choose from {', '.join(sorted(known))}")
        return ProjectionOptions(**projection)
    raise ValueError(f"projection must be a ProjectionOptions, a dict of its fields or None, got {type(projection).__name__}")


@dataclasses.dataclass
class Inputs:
    """Everything an export reads, found, loaded and checked before anything is computed or written."""

    run_dir: pathlib.Path  # the autoencoder run
    config: autoencoder.AutoencoderConfig
    encoder: object
    decoder: object
    real: object  # data.dataset.Dataset of the original scans
    split: np.ndarray  # [n_real] "train" / "val"
    gan: object  # generated images [N, 128, 128, 1], a GAN run folder, or None
    generator: object = None  # the Keras generator projected into (when projecting)
    generator_name: str = ""
    scans: list = dataclasses.field(default_factory=list)  # per progression: two (image, label, real index or None)


def resolve_inputs(autoencoder_run=None, gan=runs.LATEST, projection=None, verbose=1):
    """Resolve the run designators (`runs.resolve_run`), load the autoencoder, the real scans and the generator
    to project into, and check the progression inputs; returns `Inputs`. Reads only."""
    projection = projection_options(projection)
    run_dir = runs.resolve_run(autoencoder_run or runs.LATEST, kind="autoencoder")
    gan = autoencoder.resolve_gan(gan, verbose)
    generator_folder = None
    if projection.active and not _is_model(projection.generator):
        generator_folder = runs.resolve_run(projection.generator, kind="gan")
    config, encoder, decoder = autoencoder.load_autoencoder(run_dir)
    if config.latent_dim != 2:
        raise ValueError(f"the widget draws a 2-D latent map; run {run_dir.name} has a {config.latent_dim}-D latent space")
    real, split = autoencoder.load_real_images(config)
    scans = [[_scan_input(spec, real) for spec in pair] for pair in projection.progression]
    inputs = Inputs(run_dir, config, encoder, decoder, real, split, gan, scans=scans)
    if projection.active:
        if generator_folder is None:
            inputs.generator, inputs.generator_name = projection.generator, str(getattr(projection.generator, "name", "generator"))
        else:
            inputs.generator, inputs.generator_name = runs.load_generator(generator_folder), autoencoder.run_label(generator_folder)
    return inputs


def _is_model(generator):
    return generator is not None and not isinstance(generator, (str, os.PathLike, int))


def _scan_input(spec, real):
    """A progression end -> (image [128, 128, 1], label, index of the real scan or None).

    `spec`: a scan file, the index of a real scan on the map, or a real scan's file name."""
    text = str(spec)
    path = pathlib.Path(text).expanduser()
    if path.is_file():
        return projection_lib.read_images([path])[0], path.name, None
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool) or text.isdigit():
        index = int(text)
        if not 0 <= index < len(real):
            raise ValueError(f"real scan index {index} is out of range: the map has {len(real)} real scans (0..{len(real) - 1}); pass a valid index or a scan file")
        return real.images[index], str(real.files[index]), index
    hits = np.flatnonzero(np.asarray(real.files).astype(str) == text)
    if len(hits) > 1:
        raise ValueError(f"{text!r} names {len(hits)} real scans (indices {', '.join(map(str, hits))}); pass one of the indices instead")
    if len(hits) == 1:
        return real.images[hits[0]], text, int(hits[0])
    raise ValueError(f"{text}: no such image file, real scan index or real scan file name; pass a PNG/JPEG scan or a scan on the map")


# ---------------------------------------------------------------- latent points

@dataclasses.dataclass
class LatentMap:
    """The dots of the map: real scans' and generated scans' 2-D points, and the generated images."""

    real_z: np.ndarray  # [n_real, 2]
    generated: np.ndarray  # [n_generated, 128, 128, 1]
    generated_z: np.ndarray  # [n_generated, 2]
    source: str  # the GAN run's name, "images" for an array, "" for none


def encode_map(inputs, n_generated=256):
    """Encode the real scans and `n_generated` samples of the GAN (if any) -> `LatentMap`."""
    real_z = autoencoder.encode(inputs.encoder, inputs.real.images)  # [n_real, 2]
    fake = autoencoder.generated_images(inputs.gan, n_generated)
    if fake is None:
        fake = np.zeros((0,) + inputs.real.images.shape[1:], np.float32)
    if not len(fake):
        source = ""
    else:
        source = "images" if isinstance(inputs.gan, np.ndarray) else autoencoder.run_label(inputs.gan)
    return LatentMap(real_z, fake, autoencoder.encode(inputs.encoder, fake), source)


# ---------------------------------------------------------------- projection overlays

@dataclasses.dataclass
class Overlay:
    """The projection blocks of points.json, the images they add to the sprite and their 2-D points."""

    blocks: dict
    images: list  # arrays [k, 128, 128, 1], in sprite order
    z: list  # arrays [k, 2], for the map's bounds


def project_overlay(inputs, projection, thumb_offset, verbose=1):
    """Project validation scans and progressions into `inputs.generator` and encode the results -> `Overlay`.
    `thumb_offset`: sprite index of the first added image."""
    options = projection.project_kwargs(verbose)
    overlay = Overlay({}, [], [])
    if projection.project:
        block, recon, z = _project_real(inputs, projection.project, options, thumb_offset)
        if verbose and len(recon) < projection.project:
            print(f"note: the validation split has {len(recon)} scans, all of them are projected (asked for {projection.project})")
        overlay.blocks["projected"] = block
        overlay.images.append(recon)
        overlay.z.append(z)
        thumb_offset += len(recon)
    progressions = []
    for pair in inputs.scans:
        block, frames, z = _progression(inputs, pair, projection, options, thumb_offset)
        progressions.append(block)
        overlay.images.append(frames)
        overlay.z.append(z)
        thumb_offset += len(frames)
    if progressions:
        overlay.blocks["progressions"] = progressions
    overlay.blocks["projection"] = {"generator": inputs.generator_name, "space": projection_lib.latent_space(inputs.generator),
                                    "steps": projection.steps, "starts": projection.starts, "features": projection.features, "seed": projection.seed}
    return overlay


def _validation_picks(split, n):
    """Indices of n validation scans spread evenly over the split (all of them when there are fewer)."""
    val = np.flatnonzero(np.asarray(split) == "val")
    if n >= len(val):
        return val
    return val[np.round(np.linspace(0, len(val) - 1, n)).astype(int)]


def _project_real(inputs, n, options, thumb_offset, batch=32):
    """Project n validation scans -> ("projected" block, reconstructions [n, 128, 128, 1], 2-D points [n, 2])."""
    picks = _validation_picks(inputs.split, n)
    targets = inputs.real.images
    chunks = [projection_lib.project(inputs.generator, targets[picks[i:i + batch]], **options) for i in range(0, len(picks), batch)]
    images = np.concatenate([c["images"] for c in chunks]) if chunks else np.zeros((0,) + targets.shape[1:], np.float32)  # [n, 128, 128, 1]
    loss = np.concatenate([c["loss"] for c in chunks]) if chunks else np.zeros(0, np.float32)  # [n]
    z = autoencoder.encode(inputs.encoder, images)  # [n, 2]
    block = {"z": _round(z), "real": [int(i) for i in picks], "loss": [round(float(v), 5) for v in loss], "thumb_offset": thumb_offset}
    return block, images, z


def _progression(inputs, pair, projection, options, thumb_offset):
    """One progression -> (block, frames + inputs [path_steps + 2, 128, 128, 1], 2-D points [path_steps + 2, 2])."""
    (image_a, label_a, real_a), (image_b, label_b, real_b) = pair
    k = projection.path_steps
    result = projection_lib.progression(inputs.generator, image_a, image_b, k, projection.mode, **options)
    images = np.concatenate([result["frames"], result["inputs"]])  # [k + 2, 128, 128, 1]
    z = autoencoder.encode(inputs.encoder, images)  # [k + 2, 2]
    block = {
        "name": f"{label_a} → {label_b}",
        "inputs": [label_a, label_b],
        "input_real": [real_a, real_b],
        "input_z": _round(z[k:]),
        "input_thumbs": [thumb_offset + k, thumb_offset + k + 1],
        "z": _round(z[:k]),
        "thumbs": list(range(thumb_offset, thumb_offset + k)),
        "mode": projection.mode,
    }
    return block, images, z


# ---------------------------------------------------------------- points.json

def build_points(inputs, latents, overlay=None):
    """The points.json object (`schema.build`, validated) of an export."""
    real = inputs.real
    metrics_file = inputs.run_dir / "metrics.json"
    metrics = _finite(json.loads(metrics_file.read_text())) if metrics_file.is_file() else None
    blocks = {
        "image_size": decoding.IMAGE_SIZE,
        "classes": list(sources.CLASSES),
        "bounds": _bounds(latents.real_z, latents.generated_z, *(overlay.z if overlay else [])),
        "real": {"z": _round(latents.real_z), "cls": [sources.CLASSES.index(c) for c in real.classes],
                 "file": [str(f) for f in real.files], "split": [str(s) for s in inputs.split]},
        "generated": {"z": _round(latents.generated_z), "source": latents.source},
        "thumbs": {"file": "thumbs.png", "size": THUMB, "cols": SPRITE_COLS, "generated_offset": len(latents.real_z)},
        "autoencoder": {"run": inputs.run_dir.name, "widths": list(inputs.config.widths), "epochs": inputs.config.epochs, "metrics": metrics},
    }
    if overlay:
        blocks.update(overlay.blocks)
    return schema.build(**blocks)


def _bounds(*arrays, margin=0.08):
    z = np.concatenate([a for a in arrays if len(a)])
    lo, hi = z.min(axis=0), z.max(axis=0)
    pad = np.maximum((hi - lo) * margin, 1e-3)
    return [float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]), float(hi[1] + pad[1])]


def _round(z):
    return [[round(float(a), 5), round(float(b), 5)] for a, b in z]


def _finite(blob):
    """A JSON object with NaN and infinities replaced by null (JSON has no such numbers)."""
    if isinstance(blob, dict):
        return {k: _finite(v) for k, v in blob.items()}
    if isinstance(blob, list):
        return [_finite(v) for v in blob]
    return None if isinstance(blob, float) and not math.isfinite(blob) else blob


# ---------------------------------------------------------------- the export

def export_widget(autoencoder_run=None, gan=runs.LATEST, out_dir=None, n_generated=256, projection=None, cdn_fallback=False, verbose=1):
    """Export the widget of an autoencoder run into `out_dir` (default exports/latent_widget/); returns it.

    `autoencoder_run`: a run designator (`covgan_utils.runs.resolve_run`; None = `latest`). `gan`: generated
    images [N, 128, 128, 1] in [-1, 1], a GAN run designator (`latest` is skipped with a note when there is
    no GAN run) or None for no generated overlay. `projection`: `ProjectionOptions` (or a dict of its fields)
    for the projection overlays. Bad inputs raise before anything is computed or written; nothing is
    written outside `out_dir`."""
    projection = projection_options(projection)
    inputs = resolve_inputs(autoencoder_run, gan, projection, verbose)
    latents = encode_map(inputs, n_generated)
    overlay = project_overlay(inputs, projection, len(latents.real_z) + len(latents.generated_z), verbose) if projection.active else None
    points = build_points(inputs, latents, overlay)
    out_dir = pathlib.Path(out_dir) if out_dir else DEFAULT_OUT
    out_dir.mkdir(parents=True, exist_ok=True)
    write_decoder(inputs, out_dir / "model")
    write_points(out_dir, points, [inputs.real.images, latents.generated, *(overlay.images if overlay else [])])
    autoencoder.save_latents(out_dir / autoencoder.LATENTS_FILE, autoencoder.latent_arrays(
        inputs.real, inputs.split, latents.real_z, latents.generated_z, latents.source))
    write_page(out_dir, cdn_fallback)
    if verbose:
        extra = f", {len(points.get('projected', {}).get('z', []))} projected, {len(points.get('progressions', []))} progressions" if overlay else ""
        print(f"widget: {len(latents.real_z)} real + {len(latents.generated_z)} generated points{extra}, decoder of {inputs.run_dir.name} -> {out_dir}")
    return out_dir


def write_decoder(inputs, out_dir):
    """The autoencoder's decoder as a TF.js graph model in `out_dir`, rebuilt in the graph the TF.js CPU backend runs."""
    _, _, portable = autoencoder.build_autoencoder(inputs.config)  # same weights, tanh after the reshape
    portable.set_weights(inputs.decoder.get_weights())
    return export_decoder_tfjs(portable, out_dir)


def write_points(out_dir, points, images):
    """points.json (validated again) and thumbs.png, the sprite of `images` (a list of [k, 128, 128, 1] arrays in sprite order)."""
    import cv2

    text = schema.dumps(points)
    ok, png = cv2.imencode(".png", _thumbnails(np.concatenate(images)))
    if not ok:
        raise RuntimeError("could not encode the thumbnail sprite as PNG")
    files.write_atomic(out_dir / points["thumbs"]["file"], lambda fh: fh.write(png.tobytes()))
    files.write_text_atomic(out_dir / schema.FILE, text)


def _thumbnails(images):
    """[N, 128, 128, 1] in [-1, 1] -> uint8 sprite [rows*THUMB, SPRITE_COLS*THUMB]."""
    import cv2

    n = len(images)
    rows = max(1, -(-n // SPRITE_COLS))
    sprite = np.zeros((rows * THUMB, SPRITE_COLS * THUMB), np.uint8)
    for i, image in enumerate(decoding.to_uint8(images)[..., 0]):
        r, c = divmod(i, SPRITE_COLS)
        sprite[r * THUMB:(r + 1) * THUMB, c * THUMB:(c + 1) * THUMB] = cv2.resize(image, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    return sprite


# ---------------------------------------------------------------- page assets

def _vendor_mode(out_dir, cdn_fallback):
    """Copy the JS libraries next to the page; returns (tfjs src, three src, trackball src)."""
    missing = [src for src in VENDOR.values() if not (NODE_MODULES / src).is_file()]
    if not missing:
        for dest, src in VENDOR.items():
            (out_dir / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(NODE_MODULES / src, out_dir / dest)
        return "./vendor/tf.min.js", "./vendor/three.module.min.js", "./vendor/TrackballControls.js"
    if not cdn_fallback:
        raise FileNotFoundError(f"{NODE_MODULES} lacks {missing[0]}: run `make install-widget` (npm ci in widget/)")
    versions = json.loads((WIDGET_DIR / "package.json").read_text())["dependencies"]
    tfjs, three = versions["@tensorflow/tfjs"], versions["three"]
    print(f"note: {NODE_MODULES} not installed, the page loads tfjs {tfjs} and three {three} from a CDN")
    return (f"{CDN}@tensorflow/tfjs@{tfjs}/{VENDOR['vendor/tf.min.js'].split('/', 2)[2]}",
            f"{CDN}three@{three}/build/three.module.min.js",
            f"{CDN}three@{three}/examples/jsm/controls/TrackballControls.js")


def write_page(out_dir, cdn_fallback=False):
    """index.html (library sources and the points.json format it reads filled in), widget.js, widget.css and vendor/."""
    tfjs_src, three_src, trackball_src = _vendor_mode(out_dir, cdn_fallback)
    page = (PAGE_DIR / "index.html").read_text()
    fills = {"{{TFJS_SRC}}": tfjs_src, "{{THREE_SRC}}": three_src, "{{TRACKBALL_SRC}}": trackball_src,
             "{{POINTS_FORMAT}}": html.escape(json.dumps(schema.page_contract()), quote=True)}
    for key, value in fills.items():
        page = page.replace(key, value)
    (out_dir / "index.html").write_text(page)
    for name in ("widget.js", "widget.css"):
        shutil.copyfile(PAGE_DIR / name, out_dir / name)


# ---------------------------------------------------------------- converter

def find_converter():
    """Path of `tensorflowjs_converter`: $COVGAN_TFJS_CONVERTER, .venv-tfjs/, or PATH."""
    candidates = [os.environ.get("COVGAN_TFJS_CONVERTER"), paths.PROJECT_ROOT / ".venv-tfjs" / "bin" / "tensorflowjs_converter", shutil.which("tensorflowjs_converter")]
    for c in candidates:
        if c and pathlib.Path(c).is_file():
            return pathlib.Path(c)
    raise FileNotFoundError("TF.js converter not found: run `make install-widget` (creates .venv-tfjs/) or set $COVGAN_TFJS_CONVERTER")


def export_decoder_tfjs(decoder, out_dir):
    """Convert a Keras decoder to a TF.js graph model in `out_dir` (model.json + shards)."""
    out_dir = pathlib.Path(out_dir)
    converter = find_converter()
    with tempfile.TemporaryDirectory(prefix="covgan-savedmodel-") as tmp:
        saved = pathlib.Path(tmp) / "decoder"
        decoder.export(str(saved), format="tf_saved_model", verbose=False)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        cmd = [str(converter), "--input_format=tf_saved_model", "--output_format=tfjs_graph_model",
               "--signature_name=serving_default", "--saved_model_tags=serve", str(saved), str(out_dir)]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0 or not (out_dir / "model.json").is_file():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise RuntimeError(f"tensorflowjs_converter failed (exit {proc.returncode}):\n{tail}")
    return out_dir / "model.json"
