"""Latent-space widget: export the autoencoder's decoder to TF.js next to a static page, and serve it.

`export_widget()` writes a self-contained folder (default exports/latent_widget/):
    index.html, widget.js, widget.css   the page (sources in widget/page/)
    vendor/                             tf.min.js, three.module.min.js, TrackballControls.js (from widget/node_modules)
    model/                              model.json + weight shards (TF.js graph model of the decoder)
    points.json, thumbs.png             latent coordinates of real and generated scans, 32x32 thumbnail sprite

With `project=N` and/or `progression=[(a, b), ...]` the export also projects scans into a GAN generator
(`covgan_utils.inversion.projection`): N validation scans' reconstructions, and the walk between two projected scans,
are encoded by the autoencoder and drawn on the map ("projected" and "progressions" in points.json, version 2).

The decoder goes Keras 3 -> SavedModel (`model.export`) -> `tensorflowjs_converter` (graph model), run as a
subprocess from its own virtual environment (.venv-tfjs/, made by `make install-widget`): the converter
needs protobuf 6.31.1, which TensorFlow 2.19 in the main environment does not accept (see docs/WIDGET.md).
"""
import json
import os
import pathlib
import shutil
import subprocess
import tempfile

import numpy as np

from covgan_utils import runs
from covgan_utils.data import decoding, sources
from covgan_utils.inversion import projection
from covgan_utils.util import paths
from covgan_utils.widget import autoencoder

WIDGET_DIR = paths.PROJECT_ROOT / "widget"


PAGE_DIR = WIDGET_DIR / "page"


NODE_MODULES = WIDGET_DIR / "node_modules"


DEFAULT_OUT = paths.EXPORTS_DIR / "latent_widget"


THUMB = 32  # thumbnail side in the sprite


SPRITE_COLS = 64


VENDOR = {  # file in the export -> file in node_modules
    "vendor/tf.min.js": "@tensorflow/tfjs/dist/tf.min.js",
    "vendor/three.module.min.js": "three/build/three.module.min.js",
    "vendor/TrackballControls.js": "three/examples/jsm/controls/TrackballControls.js",
}


CDN = "https://cdn.jsdelivr.net/npm/"


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


def _write_page(out_dir, cdn_fallback):
    tfjs_src, three_src, trackball_src = _vendor_mode(out_dir, cdn_fallback)
    html = (PAGE_DIR / "index.html").read_text()
    html = html.replace("{{TFJS_SRC}}", tfjs_src).replace("{{THREE_SRC}}", three_src).replace("{{TRACKBALL_SRC}}", trackball_src)
    (out_dir / "index.html").write_text(html)
    for name in ("widget.js", "widget.css"):
        shutil.copyfile(PAGE_DIR / name, out_dir / name)


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


def _bounds(*arrays, margin=0.08):
    z = np.concatenate([a for a in arrays if len(a)])
    lo, hi = z.min(axis=0), z.max(axis=0)
    pad = np.maximum((hi - lo) * margin, 1e-3)
    return [float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]), float(hi[1] + pad[1])]


def _round(z):
    return [[round(float(a), 5), round(float(b), 5)] for a, b in z]


# ---------------------------------------------------------------- export

def export_widget(autoencoder_run=None, gan="latest", out_dir=None, n_generated=256, cdn_fallback=False, verbose=1,
                  project=0, progression=None, generator=None, project_steps=300, project_starts=4, path_steps=8,
                  mode="linear", project_features="domain", seed=0):
    """Export the widget for an autoencoder run; returns the output folder.

    `gan`: generated images as an array [N, 128, 128, 1] in [-1, 1], a GAN run folder/number, "latest"
    (newest GAN run, skipped with a note when none exists), "release", or None for no generated overlay.

    Projection overlays (points.json version 2; without them the export is version 1, as before):
    `project=N` projects N validation scans (evenly spaced over the split; all of them when there are
    fewer) into `generator` and maps the reconstructions; `progression` is one pair (a, b) or a list of
    pairs, each a scan file, a real scan's index in points.json or its file name: both are projected,
    `path_steps` latents are walked between them (`mode` "linear" or "slerp") and every decoded frame
    is mapped. `generator`: a Keras generator, a GAN run folder/number, or None / "release" (the
    released model). `project_steps`, `project_starts`, `project_features` and `seed` go to
    `project.project` (num_steps, starts, features, seed).
    """
    import cv2

    pairs = _check_projection_options(project, progression, project_steps, project_starts, path_steps, mode)
    run_dir = runs.resolve_run(autoencoder_run or runs.LATEST, kind="autoencoder")
    config, encoder, decoder = autoencoder.load_autoencoder(run_dir)
    if config.latent_dim != 2:
        raise ValueError(f"the widget draws a 2-D latent map; run {run_dir.name} has a {config.latent_dim}-D latent space")
    real, split = autoencoder.load_real_images(config)
    scans = [[_scan_input(spec, real) for spec in pair] for pair in pairs]  # bad inputs fail before any work
    out_dir = pathlib.Path(out_dir) if out_dir else DEFAULT_OUT
    out_dir.mkdir(parents=True, exist_ok=True)

    real_z = encoder.predict(real.images, batch_size=128, verbose=0)
    fake = autoencoder.generated_images(gan, n_generated)
    if fake is None:
        fake = np.zeros((0,) + real.images.shape[1:], np.float32)
        if gan is not None and verbose:
            print("note: no GAN run found, the widget shows real scans only")
    fake_z = encoder.predict(fake, batch_size=128, verbose=0) if len(fake) else np.zeros((0, 2), np.float32)
    gan_name = "" if gan is None or isinstance(gan, np.ndarray) or not len(fake) else str(gan)
    overlay = None
    if project or scans:
        options = {"num_steps": project_steps, "starts": project_starts, "features": project_features, "seed": seed, "progress": verbose > 0}
        overlay = _projection_overlay(generator, encoder, real, split, project, scans, path_steps, mode, options,
                                      thumb_offset=len(real_z) + len(fake_z), verbose=verbose)
    np.savez(run_dir / autoencoder.LATENTS_FILE, real_z=real_z, real_files=real.files, real_classes=real.classes,
             real_patients=real.patients, real_split=split, generated_z=fake_z, gan_run=np.array(gan_name))

    _, _, portable = autoencoder.build_autoencoder(config)  # same weights, graph the TF.js CPU backend can run
    portable.set_weights(decoder.get_weights())
    export_decoder_tfjs(portable, out_dir / "model")
    extra_images = overlay["images"] if overlay else []
    cv2.imwrite(str(out_dir / "thumbs.png"), _thumbnails(np.concatenate([real.images, fake, *extra_images])))
    metrics_file = run_dir / "metrics.json"
    points = {
        "version": 1,
        "image_size": decoding.IMAGE_SIZE,
        "classes": list(sources.CLASSES),
        "bounds": _bounds(real_z, fake_z),
        "real": {
            "z": _round(real_z),
            "cls": [sources.CLASSES.index(c) for c in real.classes],
            "file": [str(f) for f in real.files],
            "split": [str(s) for s in split],
        },
        "generated": {"z": _round(fake_z), "source": gan_name or ("images" if len(fake) else "")},
        "thumbs": {"file": "thumbs.png", "size": THUMB, "cols": SPRITE_COLS, "generated_offset": len(real_z)},
        "autoencoder": {"run": run_dir.name, "widths": list(config.widths), "epochs": config.epochs,
                        "metrics": json.loads(metrics_file.read_text()) if metrics_file.is_file() else None},
    }
    if overlay:
        points.update(version=2, bounds=_bounds(real_z, fake_z, *overlay["z"]), **overlay["blocks"])
    (out_dir / "points.json").write_text(json.dumps(points, separators=(",", ":")))
    _write_page(out_dir, cdn_fallback)
    if verbose:
        extra = f", {len(overlay['blocks'].get('projected', {}).get('z', []))} projected, {len(pairs)} progressions" if overlay else ""
        print(f"widget: {len(real_z)} real + {len(fake_z)} generated points{extra}, decoder of {run_dir.name} -> {out_dir}")
    return out_dir


# ---------------------------------------------------------------- projection overlays

def _check_projection_options(n_project, progression, project_steps, project_starts, path_steps, mode):
    """Validate the projection options before anything is loaded; returns the progressions as a list of pairs."""
    if isinstance(n_project, bool) or not isinstance(n_project, (int, np.integer)) or n_project < 0:
        raise ValueError(f"project must be a whole number >= 0 (how many validation scans to project), got {n_project!r}")
    if isinstance(path_steps, bool) or not isinstance(path_steps, (int, np.integer)) or path_steps < 2:
        raise ValueError(f"path_steps must be a whole number >= 2 (frames on a progression, both ends included), got {path_steps!r}")
    if project_steps < 5 or project_starts < 1:
        raise ValueError(f"project_steps must be >= 5 and project_starts >= 1, got {project_steps} and {project_starts}")
    if mode not in ("linear", "slerp"):
        raise ValueError(f"unknown mode {mode!r}; choose 'linear' or 'slerp'")
    if progression is None:
        return []
    pairs = [progression] if len(progression) == 2 and not any(isinstance(x, (list, tuple)) for x in progression) else list(progression)
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"a progression is a pair (scan A, scan B), got {pair!r}; pass two scans per progression")
    return [tuple(pair) for pair in pairs]


def _scan_input(spec, real):
    """A progression end -> (image [128, 128, 1], label, index of the real scan or None).

    `spec`: a scan file, the index of a real scan on the map, or a real scan's file name."""
    text = str(spec)
    path = pathlib.Path(text).expanduser()
    if path.is_file():
        return projection.read_images([path])[0], path.name, None
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


def _load_generator(generator):
    """A generator argument -> (Keras generator, name for points.json)."""
    if generator is not None and not isinstance(generator, (str, os.PathLike, int)):
        return generator, str(getattr(generator, "name", "generator"))
    folder = runs.resolve_run(generator)
    return runs.load_generator(folder), runs.RELEASE if runs.is_release(folder) else folder.name


def _validation_picks(split, n):
    """Indices of n validation scans spread evenly over the split (all of them when there are fewer)."""
    val = np.flatnonzero(np.asarray(split) == "val")
    if n >= len(val):
        return val
    return val[np.round(np.linspace(0, len(val) - 1, n)).astype(int)]


def _project_real(generator, encoder, real, split, n, options, thumb_offset, batch=32):
    """Project n validation scans -> ("projected" block, reconstructions [n, 128, 128, 1], 2-D points [n, 2])."""
    picks = _validation_picks(split, n)
    chunks = [projection.project(generator, real.images[picks[i:i + batch]], **options) for i in range(0, len(picks), batch)]
    images = np.concatenate([c["images"] for c in chunks]) if chunks else np.zeros((0,) + real.images.shape[1:], np.float32)  # [n, 128, 128, 1]
    loss = np.concatenate([c["loss"] for c in chunks]) if chunks else np.zeros(0, np.float32)  # [n]
    z = encoder.predict(images, batch_size=128, verbose=0) if len(images) else np.zeros((0, 2), np.float32)  # [n, 2]
    block = {"z": _round(z), "real": [int(i) for i in picks], "loss": [round(float(v), 5) for v in loss], "thumb_offset": thumb_offset}
    return block, images, z


def _progression(generator, encoder, pair, path_steps, mode, options, thumb_offset):
    """One progression -> (block, frames + inputs [path_steps + 2, 128, 128, 1], 2-D points [path_steps + 2, 2])."""
    (image_a, label_a, real_a), (image_b, label_b, real_b) = pair
    result = projection.progression(generator, image_a, image_b, path_steps, mode, **options)
    images = np.concatenate([result["frames"], result["inputs"]])  # [path_steps + 2, 128, 128, 1]
    z = encoder.predict(images, batch_size=128, verbose=0)  # [path_steps + 2, 2]
    block = {
        "name": f"{label_a} → {label_b}",
        "inputs": [label_a, label_b],
        "input_real": [real_a, real_b],
        "input_z": _round(z[path_steps:]),
        "input_thumbs": [thumb_offset + path_steps, thumb_offset + path_steps + 1],
        "z": _round(z[:path_steps]),
        "thumbs": list(range(thumb_offset, thumb_offset + path_steps)),
        "mode": mode,
    }
    return block, images, z


def _projection_overlay(generator, encoder, real, split, n_project, scans, path_steps, mode, options, thumb_offset, verbose=1):
    """The projection blocks of points.json -> {"blocks", "images" (sprite additions), "z" (for the bounds)}."""
    generator, name = _load_generator(generator)
    blocks, images, zs = {}, [], []
    if n_project:
        block, recon, z = _project_real(generator, encoder, real, split, n_project, options, thumb_offset)
        if verbose and len(recon) < n_project:
            print(f"note: the validation split has {len(recon)} scans, all of them are projected (asked for {n_project})")
        blocks["projected"] = block
        images.append(recon)
        zs.append(z)
        thumb_offset += len(recon)
    progressions = []
    for pair in scans:
        block, frames, z = _progression(generator, encoder, pair, path_steps, mode, options, thumb_offset)
        progressions.append(block)
        images.append(frames)
        zs.append(z)
        thumb_offset += len(frames)
    if scans:
        blocks["progressions"] = progressions
    blocks["projection"] = {"generator": name, "space": projection.latent_space(generator), "steps": int(options["num_steps"]),
                            "starts": int(options["starts"]), "features": options["features"], "seed": int(options["seed"])}
    return {"blocks": blocks, "images": images, "z": zs}
