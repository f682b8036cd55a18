"""Evaluation reports of generated CT slices against real held-out scans, with the floor and bad-generator
baselines, summary tables, and the real split exported as PNG folders.

The metric functions live in `metrics.quality` and `metrics.memorisation`, the feature networks in
`metrics.features`.
"""
import json
import pathlib
import time

import numpy as np

from covgan_utils.data import dataset, decoding
from covgan_utils.metrics.features import feature_extractor
from covgan_utils.metrics.memorisation import memorisation, save_nearest_pairs
from covgan_utils.metrics.quality import (
    as_images,
    blank_fraction,
    duplicate_fraction,
    fid,
    kid,
    ms_ssim,
    prdc,
    require,
    strictest,
    subsample,
    subsample_index,
    swd,
)

# ---------------------------------------------------------------- evaluation

def noise_baseline(n, size=128, seed=0):
    """Bad generator 1: Gaussian noise clipped to [-1, 1]."""
    return np.clip(np.random.RandomState(seed).randn(n, size, size, 1), -1, 1).astype(np.float32)


def repeat_baseline(real, n):
    """Bad generator 2: one real image repeated n times."""
    return np.repeat(as_images(real)[:1], n, axis=0)


def score_set(generated, real, features, real_features=None, train=None, train_features=None, held_out=None, held_features=None, seed=0, ms_ssim_pairs=500, gen_features=None):
    """All cheap and feature metrics of one generated set against `real` (no baselines)."""
    generated, real = as_images(generated), as_images(real)
    gen_f = features(generated) if gen_features is None else gen_features
    real_f = features(real) if real_features is None else real_features
    report = {
        "n_generated": len(generated),
        "n_real": len(real),
        "swd": swd(generated, real, seed=seed),
        "ms_ssim": ms_ssim(generated, pairs=ms_ssim_pairs, seed=seed)["mean"],
        "kid": kid(gen_f, real_f, seed=seed),
        "fid": fid(gen_f, real_f),
        "prdc": prdc(gen_f, real_f),
        "blank_fraction": blank_fraction(generated),
        "duplicate_fraction": duplicate_fraction(generated),
    }
    if train is not None:
        ref = real if held_out is None else held_out
        ref_f = real_f if held_out is None else held_features
        if train_features is None:
            train_features = features(train)
        report["memorisation"] = memorisation(generated, train, ref, gen_f, train_features, ref_f)
    return report


SCORED = ("swd", "ms_ssim", "kid", "fid", "prdc", "blank_fraction", "duplicate_fraction")  # the metrics of every scored set


def check_set_sizes(n_generated, n_real, n_train=None, n=500, baselines=True, layout=False):
    """Refuse sets too small for a metric of the report before any sampling or feature extraction, with a
    one-line ValueError naming the set, its size, the metric, its minimum and the fix. Sizes as
    `evaluate_images` uses them: generated (None: n to be sampled) and real cut to `n`; the floor (`baselines`,
    or the `layout` block of Inception reports) scores train images, or without them one half of the real set
    against the other."""
    metric, least, why = strictest(SCORED)
    generated = n if n_generated is None else n_generated
    require(metric, "generated", min(n, generated), _fix(n, n_generated, least, "a --generated folder with more images"))
    require(metric, "real", min(n, n_real), _fix(n, n_real, least, "a --real folder with more scans"))
    if not (baselines or layout):
        return
    if n_train is not None:
        require(metric, "train", n_train, "pass a --train folder with more scans" + ("" if layout else ", or --no-baselines"))
    elif min(n, n_real) // 2 < least:
        others = "a --train folder" + ("" if layout else " or --no-baselines")
        raise ValueError(f"the real set has {min(n, n_real)} images; the floor baseline scores one half of it against the other and {metric} "
                         f"needs at least {least} per half ({why}); {_fix(n, n_real, 2 * least, f'{2 * least} or more real scans')}, or {others}")


def _fix(n, count, least, more):
    """What to pass when a set of `count` images (None: sampled), cut to `n`, holds fewer than `least`."""
    fixes = ([f"--n {least} or more"] if n < least else []) + ([more] if count is not None and count < least else [])
    return "pass " + " and ".join(fixes)


def evaluate_images(generated, real, train=None, n=500, features="auto", seed=0, baselines=True, ms_ssim_pairs=500, nearest_png=None):
    """Evaluate a generated set against real held-out images -> report dict (JSON-serialisable).

    generated, real, train: [N, 128, 128, 1] in [-1, 1]; generated and real are cut to at most `n`
    images without replacement (sizes actually used are in the report). `train` (the generator's
    training images) enables the memorisation test, which searches all of it, and the
    real-train-vs-real floor, which uses n of it. Baselines, on the same n:
    "floor" (real train vs real; real split in halves when no train set is given), "noise"
    (clipped Gaussian noise) and "repeat" (one real image repeated). `features="auto"` (the default)
    uses Inception features when the [fid] extra is installed; the report then also holds "layout":
    KID/FID/PRDC on domain-encoder features for the samples and the floor, labelled layout-only.
    """
    started = time.time()
    feature_name, extract = feature_extractor(features)  # loads the network; extracts nothing yet
    check_set_sizes(len(generated), len(real), None if train is None else len(train), n, baselines, feature_name == "inception")
    requested = n
    generated = subsample(as_images(generated), n, seed)
    real = subsample(as_images(real), n, seed + 1)
    real_f = extract(real)
    train_s = train_f = train_all = train_all_f = None
    if train is not None:  # memorisation searches the whole training set; the floor uses n of it
        train_all = as_images(train)
        train_all_f = extract(train_all)
        index = subsample_index(len(train_all), n, seed + 2)
        train_s, train_f = train_all[index], train_all_f[index]
    report = {
        "features": feature_name,
        "n_requested": int(requested),
        "sampling": "without replacement; a side with fewer images than requested is used whole",
        "seed": int(seed),
        "n_train": None if train is None else len(train_all),
        "generated": score_set(generated, real, extract, real_f, train_all, train_all_f, seed=seed, ms_ssim_pairs=ms_ssim_pairs),
        "real_ms_ssim": ms_ssim(real, pairs=ms_ssim_pairs, seed=seed)["mean"],
        "real_duplicate_fraction": duplicate_fraction(real),
    }
    mem = report["generated"].get("memorisation")
    if mem is not None and nearest_png is not None:
        save_nearest_pairs(generated, train_all, mem["pixels"]["nearest_index"], mem["pixels"]["nearest_distance"], nearest_png)
        report["nearest_pairs_png"] = str(nearest_png)
    if feature_name == "inception":
        report["layout"] = layout_report(generated, real, train_s, seed)
    if baselines:
        report["baselines"] = baseline_reports(real, real_f, extract, len(generated), train_s, train_f, seed, ms_ssim_pairs, train_all, train_all_f)
    report["wall_seconds"] = round(time.time() - started, 2)
    return report


LAYOUT_NOTE = "domain-encoder features: lung layout only, blind to texture and resolution (docs/RESULTS.md, calibration); the Inception numbers are the headline"


def layout_report(generated, real, train=None, seed=0):
    """KID, FID and PRDC on domain-encoder features of `generated` and of the floor (the first
    len(generated) of `train`, else one half of `real` against the other), labelled layout-only."""
    _, extract = feature_extractor("domain")
    real_f, gen_f = extract(real), extract(generated)
    if train is not None:
        floor_f, floor_real_f = extract(train[: len(generated)]), real_f
    else:
        half = len(real) // 2
        floor_f, floor_real_f = real_f[:half], real_f[half:]

    def block(gen, ref):
        return {"kid": kid(gen, ref, seed=seed), "fid": fid(gen, ref), "prdc": prdc(gen, ref)}

    return {"features": "domain", "note": LAYOUT_NOTE, "generated": block(gen_f, real_f), "floor": block(floor_f, floor_real_f)}


def baseline_reports(real, real_f, extract, n, train=None, train_f=None, seed=0, ms_ssim_pairs=500, train_all=None, train_all_f=None):
    """Scores of the floor and the two bad generators against `real`, on `n` images each
    (`train`: n training images for the floor; `train_all`: the set searched for copies)."""
    if train_all is None:
        train_all, train_all_f = train, train_f
    out = {}
    if train is not None:
        floor_gen, floor_f, floor_real, floor_real_f = train[:n], train_f[:n], real, real_f
        out["floor_note"] = "real train images scored as samples against the real held-out images"
    else:
        half = len(real) // 2
        floor_gen, floor_f, floor_real, floor_real_f = real[:half], real_f[:half], real[half:], real_f[half:]
        out["floor_note"] = "one half of the real images scored against the other half"
    out["floor"] = score_set(floor_gen, floor_real, extract, floor_real_f, seed=seed, ms_ssim_pairs=ms_ssim_pairs, gen_features=floor_f)
    noise = noise_baseline(n, real.shape[1], seed)
    out["noise"] = score_set(noise, real, extract, real_f, train_all, train_all_f, seed=seed, ms_ssim_pairs=ms_ssim_pairs)
    repeat_f = np.repeat(real_f[:1], n, axis=0)  # features of one image, repeated like the image
    out["repeat"] = score_set(repeat_baseline(real, n), real, extract, real_f, train_all, train_all_f, seed=seed, ms_ssim_pairs=ms_ssim_pairs, gen_features=repeat_f)
    return out


SUMMARY_ROWS = (
    ("SWD x1e3 (mean of levels)", lambda r: r["swd"]["mean"]),
    ("MS-SSIM (within set)", lambda r: r["ms_ssim"]),
    ("KID", lambda r: r["kid"]["mean"]),
    ("KID std", lambda r: r["kid"]["std"]),
    ("FID", lambda r: r["fid"]["value"]),
    ("precision", lambda r: r["prdc"]["precision"]),
    ("recall", lambda r: r["prdc"]["recall"]),
    ("density", lambda r: r["prdc"]["density"]),
    ("coverage", lambda r: r["prdc"]["coverage"]),
    ("blank fraction", lambda r: r["blank_fraction"]),
    ("duplicate fraction", lambda r: r["duplicate_fraction"]),
    ("copy fraction (pixels)", lambda r: r["memorisation"]["pixels"]["copy_fraction"]),
    ("copy fraction (features)", lambda r: r["memorisation"]["features"]["copy_fraction"]),
)


LAYOUT_ROWS = (
    ("KID, domain features (layout only)", lambda r: r["kid"]["mean"]),
    ("FID, domain features (layout only)", lambda r: r["fid"]["value"]),
    ("precision, domain (layout only)", lambda r: r["prdc"]["precision"]),
    ("recall, domain (layout only)", lambda r: r["prdc"]["recall"]),
)


def summary_table(report):
    """Markdown table: the generated set next to the floor and the two bad baselines."""
    columns = [("generated", report["generated"])]
    columns += [(name, report["baselines"][name]) for name in ("floor", "noise", "repeat") if name in report.get("baselines", {})]
    lines = ["| metric | " + " | ".join(c for c, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, get in SUMMARY_ROWS:
        cells = []
        for _, col in columns:
            try:
                cells.append(f"{get(col):.4g}")
            except (KeyError, TypeError):
                cells.append("n/a")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    layout = report.get("layout")
    for label, get in LAYOUT_ROWS if layout else ():
        cells = [f"{get(layout[name]):.4g}" if name in layout else "n/a" for name, _ in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    n = report["generated"]
    lines.append(f"\nfeatures: {report['features']}; n generated = {n['n_generated']}, n real = {n['n_real']}; real MS-SSIM = {report['real_ms_ssim']:.4g}")
    return "\n".join(lines)


def _strip_lists(obj):
    """Report without the per-sample lists (kept out of the JSON file to keep it readable)."""
    if isinstance(obj, dict):
        return {k: _strip_lists(v) for k, v in obj.items() if k not in ("nearest_index", "nearest_distance")}
    return obj


def write_report(report, out_file):
    out_file = pathlib.Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(_strip_lists(report), indent=2) + "\n")
    return out_file


# ---------------------------------------------------------------- real reference sets

def real_split(path=None, flip=True):
    """(train, val) Datasets of the COVID scans, from the shared patient-level split over COVID + non-COVID
    (`dataset.VAL_FRACTION`, `dataset.SPLIT_SEED`) that the domain encoder is trained on, so validation scans stay unseen."""
    return dataset.load_split(path, classes=("CT_COVID",), flip=flip, val_fraction=dataset.VAL_FRACTION, seed=dataset.SPLIT_SEED)


def export_real(out_dir, path=None):
    """Write the COVID scans of the encoder's patient-level split as <out_dir>/{train,val}/*.png -> counts."""
    import cv2

    counts = {}
    for name, ds in zip(("train", "val"), real_split(path)):
        folder = pathlib.Path(out_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, (image, file, flipped) in enumerate(zip(decoding.to_uint8(ds.images), ds.files, ds.flipped)):
            cv2.imwrite(str(folder / f"{i:04d}-{'flip-' if flipped else ''}{pathlib.Path(str(file)).stem}.png"), image[..., 0])
        counts[name] = len(ds)
    return counts
