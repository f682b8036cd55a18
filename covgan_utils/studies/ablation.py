"""Ablation studies at equal compute. `remedies`: the paper recipe, the paper recipe plus one remedy at
a time, and `best`. `families`: the model families (lean `best`, + noise inputs, style-based,
FastGAN-style), each with and without class conditioning and with DiffAugment or the full ADA pipeline.
`selection-cpu`: the families at CPU size with the guard watching only, screened by `studies.selection`.

Every row trains for the same wall-clock budget on the same machine, for each seed, into
`<root>/<row>-s<seed>/` (resumable: finished runs are skipped). `evaluate` scores each run against the
patient-level validation split with `covgan_utils.metrics`; `report` writes the markdown table
(mean and spread over seeds) with the real-vs-real floor beside it.
"""
import json
import pathlib
import shutil
import re
import time

import numpy as np

from covgan_utils import checkpoints, sampling
from covgan_utils import config as config_lib
from covgan_utils import runs as runs_lib
from covgan_utils.data import dataset
from covgan_utils.metrics import quality
from covgan_utils.metrics import report as report_lib
from covgan_utils.training import loop
from covgan_utils.util import files, paths
from covgan_utils.util.hardware import hardware

REMEDIES = {  # row name -> changes to the paper recipe
    "paper": {},
    "+non-saturating": {"loss": "non-saturating"},
    "+hinge+SN": {"loss": "hinge", "spectral_norm": True},
    "+wgan-gp": {"loss": "wgan-gp", "d_dropout": 0.0},
    "+R1": {"loss": "non-saturating", "r1_gamma": 0.2},
    "+DiffAugment": {"augment": "translation,cutout"},
    "+ADA": {"augment": "translation,cutout", "ada_target": 0.6},
    "+EMA": {"ema_decay": 0.99},
    "+2:1": {"g_steps": 2},
    "+label smoothing": {"label_smoothing": 0.1},
    "+resize-conv": {"upsample": "resize"},
    "best": None,  # the `best` preset itself
}


BOTH_CLASSES = {"conditional": True, "classes": ("CT_COVID", "CT_NonCOVID")}


FAMILIES = {  # row name -> (preset, changes): the `best` training recipe on every model family
    "lean (best)": ("best", {}),
    "lean +noise": ("best", {"g_noise": True}),
    "style": ("style", {}),
    "fastgan": ("fastgan", {}),
    "lean +cond": ("best", BOTH_CLASSES),
    "lean +noise +cond": ("best", {"g_noise": True, **BOTH_CLASSES}),
    "style +cond": ("style", BOTH_CLASSES),
    "fastgan +cond": ("fastgan", BOTH_CLASSES),
    "lean +full ADA": ("best", {"augment": "ada"}),
    "style +full ADA": ("style", {"augment": "ada"}),
    "fastgan +full ADA": ("fastgan", {"augment": "ada"}),
    "lean +full ADA, p 0.8": ("best", {"augment": "ada", "ada_target": 0.0, "augment_p": 0.8}),  # the leak test
}


WATCH_ONLY = {"guard": True, "guard_watch": True}  # the guard records trips but stops no row: every row keeps its budget


# The GPU selection's candidates at CPU size (`selection.cpu_screen`): row name -> (preset, changes). In this machine's fast
# precision (bfloat16 where it has AMX / AVX512-BF16), with in-training metrics on domain features as the rule's (Inception
# on two cores would take a third of a row's minutes).
SELECTION_CPU = {
    name: (preset, {**changes, **WATCH_ONLY, "precision": "auto", "metrics_features": "domain"})
    for name, (preset, changes) in {
        "cpu lean": ("best", {}),
        "cpu lean rpgan": ("best", {"loss": "rpgan"}),
        "cpu r3gan": ("r3gan", {}),
        "cpu style-ada": ("style-ada", {}),
    }.items()
    if preset in config_lib.PRESETS and changes.get("loss", "bce") in config_lib.LOSSES  # those this version has
}


STUDIES = {"remedies": REMEDIES, "families": FAMILIES, "selection-cpu": SELECTION_CPU}


PRESET_STUDIES = ("families", "selection-cpu")  # studies whose rows are (preset, changes)


COLUMNS = (  # (header, path into an evaluate report's "generated" block, format)
    ("KID", ("kid", "mean"), "{:.4f}"),
    ("FID", ("fid", "value"), "{:.1f}"),
    ("SWD", ("swd", "mean"), "{:.1f}"),
    ("MS-SSIM", ("ms_ssim",), "{:.3f}"),
    ("precision", ("prdc", "precision"), "{:.2f}"),
    ("recall", ("prdc", "recall"), "{:.2f}"),
    ("coverage", ("prdc", "coverage"), "{:.2f}"),
    ("copies", ("memorisation", "pixels", "copy_fraction"), "{:.3f}"),
    ("blank", ("blank_fraction",), "{:.3f}"),
)


FAMILY_COLUMNS = (  # on Inception features, with the memorisation and diversity checks beside
    ("n", ("n_generated",), "{:.0f}"),
    ("KID", ("kid", "mean"), "{:.4f}"),
    ("FID", ("fid", "value"), "{:.1f}"),
    ("precision", ("prdc", "precision"), "{:.2f}"),
    ("recall", ("prdc", "recall"), "{:.2f}"),
    ("coverage", ("prdc", "coverage"), "{:.2f}"),
    ("copies", ("memorisation", "pixels", "copy_fraction"), "{:.3f}"),
    ("near-dups", ("duplicate_fraction",), "{:.3f}"),
    ("MS-SSIM", ("ms_ssim",), "{:.3f}"),
)


def slug(row):
    return re.sub(r"[^a-z0-9]+", "-", row.lower()).strip("-")


def study_of(row):
    """Name of the study a row belongs to ("remedies", "families" or "selection-cpu")."""
    for name, rows in STUDIES.items():
        if row in rows:
            return name
    raise ValueError(f"unknown ablation row {row!r}; choose from {', '.join(r for rows in STUDIES.values() for r in rows)}")


def row_config(row, seed, minutes, arch="paper", base="paper"):
    """Config of one ablation cell, run for `minutes` of wall time: a remedies row is `base` preset + remedy
    (model `arch`), a families or selection-cpu row its preset + changes."""
    study = study_of(row)
    if study in PRESET_STUDIES:
        preset, changes = STUDIES[study][row]
        cfg = config_lib.get_preset(preset, **changes)
    elif REMEDIES[row] is None:
        cfg = config_lib.get_preset("best").replace(arch="paper") if arch == "paper" else config_lib.get_preset("best")
    else:
        cfg = config_lib.get_preset(base).replace(arch=arch, **REMEDIES[row])
    return cfg.replace(
        preset=f"ablation-{slug(row)}", seed=seed, epochs=1_000_000, time_budget_minutes=minutes,
        sample_every=1_000_000, checkpoint_every=5, keep_checkpoints=2, metrics_every=0,  # checkpoints: guard rollbacks
    )


def run(rows, seeds, minutes, root=None, arch="paper", data_dir=None, images=None):
    """Train every (row, seed) cell not yet finished; returns their run folders."""
    root = pathlib.Path(root or paths.MODELS_DIR / "ablation")
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for row in rows:
        for seed in seeds:
            run_dir = root / f"{slug(row)}-s{seed}"
            out.append(run_dir)
            if (run_dir / "done.json").is_file():
                continue
            if run_dir.exists():  # an interrupted cell starts again: its budget must be one piece
                shutil.rmtree(run_dir)
            cfg = row_config(row, seed, minutes, arch)
            start = time.time()
            loop.train(cfg, run_dir, data_dir=data_dir, images=images, verbose=False)
            epochs = sum(1 for _ in open(run_dir / "stats.jsonl"))
            done = {"row": row, "seed": seed, "minutes": minutes, "wall_seconds": round(time.time() - start, 1), "epochs": epochs, "hardware": hardware()}
            (run_dir / "done.json").write_text(json.dumps(done) + "\n")
    return out


def slim(run_dir):
    """Reduce a finished cell to what `evaluate`, `sheet` and `report` read: its newest checkpoint keeps
    the (EMA) generator alone, as float16, and the older checkpoints go. For bringing cells back from a
    machine that only returns small files; a slimmed cell cannot resume (it is finished). -> checkpoint path."""
    run_dir = pathlib.Path(run_dir)
    if not (run_dir / "done.json").is_file():
        raise ValueError(f"{run_dir} holds no done.json: only finished ablation cells can be slimmed")
    generator, source = runs_lib.read_generator(run_dir, "latest")
    arrays = checkpoints.to_arrays("ema", generator.variables, half=True)
    arrays["epoch"] = np.asarray(source["epoch"] or 0)
    keep = run_dir / source["checkpoint"]
    checkpoints.save_arrays(keep, arrays)
    for old in checkpoints.numbered(run_dir):
        if old != keep:
            old.unlink()
    (run_dir / "checkpoint-best.npz").unlink(missing_ok=True)
    return keep


INCEPTION_COLUMNS = tuple(c for c in COLUMNS if c[0] in ("KID", "FID", "precision", "recall", "coverage"))


def finished_runs(root, rows=None, seeds=None):
    """Run folders under `root` that hold a done.json, optionally only those of `rows` and `seeds`."""
    root = pathlib.Path(root)
    runs = []
    for done_file in sorted(root.glob("*/done.json")):
        done = files.read_json(done_file, RERUN)
        if (not rows or done["row"] in rows) and (seeds is None or done["seed"] in seeds):
            runs.append(done_file.parent)
    if not runs:
        raise ValueError(f"no finished ablation runs{' of ' + ', '.join(rows) if rows else ''} under {root}")
    return runs


def report_name(features="domain"):
    """File an `evaluate` report is written to in each run folder: eval.json or eval-<features>.json."""
    return "eval.json" if features == "domain" else f"eval-{features}.json"


def _split(data_dir, val, train_images):
    """(val, train) images: the given arrays, or the shared patient-level split."""
    if val is None:
        train_ds, val_ds = dataset.load_split(data_dir)
        train_images, val = train_ds.images, val_ds.images
    return val, train_images


def _score(run_dir, checkpoint, n, features, val, train_images, out_file, grid=None, memorise=False):
    """Sample seeds 0..n-1 from one checkpoint (class 0, COVID, for conditional models), score against
    `val`, write `out_file` -> generated block. The memorisation test runs on domain features, or on any
    features when `memorise`, with the augmentation-leak statistics (`quality.leak_report`) beside."""
    generated = sampling.generate(runs_lib.load_generator(run_dir, checkpoint), range(n))  # [n, 128, 128, 1]
    if grid is not None:
        sampling.save_grid(generated[:36], grid)
    train_arg = train_images if features == "domain" or memorise else None  # memorisation: pixels are in eval.json already
    report = report_lib.evaluate_images(generated, val, train=train_arg, n=n, features=features, baselines=False)
    if memorise:
        report["leak"] = quality.leak_report(generated, val)
    report_lib.write_report(report, out_file)
    return report["generated"]


def evaluate(run_dirs, n=500, data_dir=None, val=None, train_images=None, features="domain"):
    """Score each finished run (latest checkpoint, `n` seeds) against the validation split -> eval.json.

    `features="inception"` (the `[fid]` extra) writes eval-inception.json instead, without the
    memorisation test (its pixel part is in eval.json already).
    """
    val, train_images = _split(data_dir, val, train_images)
    for run_dir in map(pathlib.Path, run_dirs):
        families = study_of(files.read_json(run_dir / "done.json", RERUN)["row"]) in PRESET_STUDIES
        grid = run_dir / "samples-final.png" if features == "domain" or families else None
        _score(run_dir, "latest", n, features, val, train_images, run_dir / report_name(features), grid, memorise=families)


def curve(run_dir, epochs, n=500, features="domain", data_dir=None, val=None, train_images=None):
    """Score checkpoints `epochs` of one run -> {epoch: generated block}; writes eval[-features]-<epoch:06d>.json."""
    val, train_images = _split(data_dir, val, train_images)
    run_dir = pathlib.Path(run_dir)
    name = report_name(features).replace(".json", "")
    return {int(e): _score(run_dir, str(e), n, features, val, train_images, run_dir / f"{name}-{int(e):06d}.json") for e in epochs}


def curve_table(run_dir, features="domain"):
    """Markdown table of the per-checkpoint reports `curve` wrote in `run_dir`, by epoch."""
    columns = COLUMNS if features == "domain" else INCEPTION_COLUMNS
    pattern = re.compile(re.escape(report_name(features).replace(".json", "")) + r"-(\d{6})\.json$")
    found = sorted((int(m.group(1)), f) for f in pathlib.Path(run_dir).iterdir() if (m := pattern.match(f.name)))
    lines = ["| epoch | " + " | ".join(c[0] for c in columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for epoch, file in found:
        generated = files.read_json(file, RERUN)["generated"]
        lines.append(f"| {epoch} | " + " | ".join(cell(generated, keys, fmt) for _, keys, fmt in columns) + " |")
    return "\n".join(lines)


def sheet(root, out, seeds=range(6), seed_of_run=0):
    """One figure, one line per ablation row: images of `seeds` from the final checkpoint of its `seed_of_run` run."""
    import matplotlib.pyplot as plt

    runs = {files.read_json(r / "done.json", RERUN)["row"]: r for r in finished_runs(root, seeds=[seed_of_run])}
    rows = [row for rows in STUDIES.values() for row in rows if row in runs]
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.2 * len(seeds), 1.3 * len(rows)), squeeze=False)
    for ax, row in zip(axes[:, 0], rows):
        images = sampling.generate(runs_lib.load_generator(runs[row], "latest"), seeds)  # [S, 128, 128, 1]
        ax.imshow(sampling.make_grid(images, cols=len(seeds)), cmap="gray", vmin=0, vmax=255)
        ax.axis("off")
        ax.set_title(row, loc="left", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return rows


def _get(report, keys):
    value = report
    for k in keys:
        value = value[k]
    return float(value)


def cell(report, keys, fmt):
    """One table cell: the value at `keys` of a report block in `fmt`, or n/a."""
    try:
        return fmt.format(_get(report, keys))
    except (KeyError, TypeError):
        return "n/a"


def table(root, floor=None, features="domain", study="remedies"):
    """Markdown table: one row per ablation row of `study`, mean +- std over seeds, from eval*.json/done.json files."""
    root = pathlib.Path(root)
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; choose from {', '.join(STUDIES)}")
    columns = FAMILY_COLUMNS if study in PRESET_STUDIES else COLUMNS if features == "domain" else INCEPTION_COLUMNS
    cells = {}
    for done_file in sorted(root.glob("*/done.json")):
        eval_file = done_file.parent / report_name(features)
        if not eval_file.is_file():
            continue
        done, report = files.read_json(done_file, RERUN), files.read_json(eval_file, RERUN)
        cells.setdefault(done["row"], []).append((done, report["generated"]))
    header = ["row", "seeds", "epochs in budget", "wall min"] + [c[0] for c in columns] + ["hardware"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in [r for r in STUDIES[study] if r in cells]:
        runs = cells[row]
        values = [f"{len(runs)}", f"{np.mean([d['epochs'] for d, _ in runs]):.0f}", f"{np.mean([d['wall_seconds'] for d, _ in runs]) / 60:.1f}"]
        for _, keys, fmt in columns:
            xs = np.array([_get(g, keys) for _, g in runs])
            values.append(fmt.format(xs.mean()) + (f" ± {fmt.format(xs.std())}" if len(xs) > 1 else ""))
        values.append("; ".join(sorted({d["hardware"] for d, _ in runs})))
        lines.append(f"| {row} | " + " | ".join(values) + " |")
    if floor is not None:
        lines.append("| real train vs val (floor) | | | | " + " | ".join(cell(floor, keys, fmt) for _, keys, fmt in columns) + " | |")
    return "\n".join(lines)


LEAK_STATS = ("angle", "elongation", "area", "asymmetry")


def leak_table(root, features="inception"):
    """Markdown table of the augmentation-leak statistics of each families run: the spread of the body's
    orientation, elongation and size and the mean left-right asymmetry, samples vs validation scans, with
    the largest KS distance and its 5% critical value. A leak widens the samples' spreads."""
    lines = ["| row | " + " | ".join(f"{s} (samples / real)" for s in LEAK_STATS) + " | max KS (5% crit.) |", "|" + "---|" * (len(LEAK_STATS) + 2)]
    for done_file in sorted(pathlib.Path(root).glob("*/done.json")):
        eval_file = done_file.parent / report_name(features)
        leak = files.read_json(eval_file, RERUN).get("leak") if eval_file.is_file() else None
        if not leak:
            continue
        row = files.read_json(done_file, RERUN)["row"]
        cells = [f"{leak[s]['generated_std' if s != 'asymmetry' else 'generated_mean']:.3g} / {leak[s]['real_std' if s != 'asymmetry' else 'real_mean']:.3g}" for s in LEAK_STATS]
        worst = max(leak.values(), key=lambda v: v["ks"])
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {worst['ks']:.2f} ({worst['ks_95']:.2f}) |")
    return "\n".join(lines)


RERUN = "rerun the ablation command that writes it (ablation run / evaluate), or remove that run folder"


def read_floor(file):
    """The real-vs-real floor block of an `evaluate` report JSON."""
    report = files.read_json(file, "pass a report written by `python -m covgan_utils evaluate` (with baselines)")
    floor = report.get("baselines", {}).get("floor") if isinstance(report.get("baselines"), dict) else None
    if not isinstance(floor, dict):
        raise ValueError(f"{file}: no baselines.floor block; pass a report written by `python -m covgan_utils evaluate` without --no-baselines")
    return floor
