"""The paper's own model on a GPU: its variants trained one after the other, and what comes back of them.

`run_paper_job` (CLI: `paper-job`, `tools/gpu_run.sh paper`) trains the `paper` preset (its 287.6M-parameter
DCGAN, BCE, batch 50, float32) in each requested variant: "1:1" or "2:1" (generator steps per
discriminator step), optionally with the paper code's near-black scaling ("1:1 paper-code",
`covgan_utils.data.scaling`). The wall-clock budget is shared equally. Its generators are far too large to
bring back, so each run leaves one `<run>.tar` in the output folder (`gpu_job.MAX_FILES` files under
`gpu_job.MAX_FILE_BYTES` in all):

- `samples.npz`: `samples` uint8 [N, 128, 128] of seeds 0..N-1 after the last epoch, seen through the
  run's scaling, and `scaling`;
- `stats.jsonl` (losses, discriminator accuracy on real and generated images per epoch), `health.jsonl`
  (blank fraction and within-set MS-SSIM of a fixed batch per epoch), `config.json`;
- `samples.png` (the last fixed-seed grid), `montage.png` (grids over the epochs), `interpolation.png`
  (seed 0 to seed 1);

and `job.json` describes the machine and every run (epochs reached, seconds per step). `score_job`
unpacks a returned folder here and scores the samples against the validation split.
"""
import dataclasses
import json
import pathlib
import re
import shutil
import tarfile
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw

from covgan_utils import config as config_lib
from covgan_utils import runs as runs_lib
from covgan_utils import sampling
from covgan_utils.data import dataset, decoding, scaling, sources
from covgan_utils.metrics import report as report_lib
from covgan_utils.studies import gpu_job
from covgan_utils.training import callbacks, loop
from covgan_utils.util import files, hardware

DEFAULT_RUNS = ("1:1", "1:1 paper-code")


DEFAULT_MINUTES = 8.0


MAX_SAMPLES = 700  # 700 x 128 x 128 bytes = 11.5 MB: with the logs and figures one tar stays under 16 MB


MAX_RUNS = gpu_job.MAX_FILES - 1  # one tar per run, and job.json


PACKED = ("config.json", "stats.jsonl", "health.jsonl", "samples.npz", "samples.png", "montage.png", "interpolation.png")


RUN_RULE = "write G:1 (generator steps per discriminator step: 1:1 or 2:1 in the paper), optionally followed by a scaling"


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One variant of the job: its name ("2:1 paper-code"), generator steps per discriminator step, scaling."""

    name: str
    g_steps: int
    scaling: str

    @property
    def slug(self):
        """File-name form: "1to1", "2to1-paper-code"."""
        return f"{self.g_steps}to1" + ("" if self.scaling == "full" else f"-{self.scaling}")


def parse_run(name):
    """'G:1' or 'G:1 SCALING' (e.g. "2:1", "1:1 paper-code") -> RunSpec; anything else is a one-line ValueError."""
    parts = str(name).split()
    match = re.fullmatch(r"(\d+):1", parts[0]) if parts else None
    steps = int(match.group(1)) if match else 0  # its upper bound is the Config field's (checked in run_config)
    scale = parts[1] if len(parts) > 1 else "full"
    if steps < 1 or len(parts) > 2 or scale not in scaling.SCALINGS:
        raise ValueError(f"unknown run {name!r}: {RUN_RULE} ({', '.join(scaling.SCALINGS)}), e.g. \"2:1\" or \"1:1 paper-code\"")
    return RunSpec(f"{steps}:1" + ("" if scale == "full" else f" {scale}"), steps, scale)


def parse_runs(names):
    """RunSpecs of the requested runs: one to MAX_RUNS, no two alike."""
    specs = [parse_run(name) for name in names]
    if not 1 <= len(specs) <= MAX_RUNS:
        raise ValueError(f"{len(specs)} runs requested; the job trains 1 to {MAX_RUNS} (one file each comes back)")
    slugs = [s.slug for s in specs]
    twice = sorted({s for s in slugs if slugs.count(s) > 1})
    if twice:
        raise ValueError(f"run {twice[0]} is requested twice; name each variant once")
    return specs


def run_config(preset, spec, minutes, grid_every, overrides=None):
    """Config of one run: `preset` with `overrides`, the run's g_steps and scaling, float32, a time budget of
    `minutes`, a sample grid every `grid_every` epochs, and one checkpoint, at the end."""
    config = config_lib.get_preset(preset, precision="float32").replace(**(overrides or {}))
    config = config.replace(g_steps=spec.g_steps, scaling=spec.scaling, time_budget_minutes=float(minutes), sample_every=grid_every)
    return config.replace(checkpoint_every=config.epochs, keep_checkpoints=1)


def check_job(minutes, n_samples):
    """A one-line ValueError for a budget or sample count the job cannot take."""
    if minutes is None or not minutes > 0:
        raise ValueError(f"minutes must be positive, got {minutes}")
    if not 8 <= n_samples <= MAX_SAMPLES:
        raise ValueError(f"n_samples must be in [8, {MAX_SAMPLES}] (one tar per run must stay under 16 MB), got {n_samples}")


def run_paper_job(data_file, out_dir, runs=DEFAULT_RUNS, minutes=DEFAULT_MINUTES, preset="paper", n_samples=500, grid_every=10,
                  overrides=None, work_dir=None, verbose=True):
    """Train each of `runs` ("1:1", "2:1", "1:1 paper-code", ...) of `preset` on `data_file` for `minutes` /
    len(runs) of wall time, one after the other, and pack each into `out_dir/<run>.tar`; returns `out_dir`.

    `overrides`: Config fields changed for every run (e.g. a smaller model for a test); `work_dir`: where the
    run folders (with their checkpoint) go, default a new folder under the temporary directory."""
    specs = parse_runs(runs)
    check_job(minutes, n_samples)
    per_run = minutes / len(specs)
    configs = [run_config(preset, spec, per_run, grid_every, overrides) for spec in specs]  # every config checked before training
    data_file = sources.find_data_dir(data_file)
    out_dir = gpu_job.empty_folder(out_dir)
    work_dir = pathlib.Path(work_dir) if work_dir else pathlib.Path(tempfile.mkdtemp(prefix="covgan-paper-"))
    job = {**hardware.device_info(), "preset": preset, "precision": configs[0].precision, "minutes": minutes, "minutes_per_run": round(per_run, 3),
           "n_samples": n_samples, "grid_every": grid_every, "data": pathlib.Path(data_file).name, "runs": []}
    for spec, config in zip(specs, configs):
        run_dir = work_dir / spec.slug
        started = time.time()
        loop.train(config, run_dir, data_dir=data_file, callbacks=[callbacks.HealthLog(run_dir)], verbose=verbose)
        entry = describe_run(spec, config, run_dir, time.time() - started)
        pack_run(run_dir, out_dir / f"{spec.slug}.tar", n_samples)
        job["runs"].append(entry)
        gpu_job.write_json(job, out_dir / "job.json")  # after every run: a later failure still leaves the earlier ones
        gpu_job.check_outputs(out_dir)
    return out_dir


def describe_run(spec, config, run_dir, seconds):
    """job.json entry of one run: name, file, g_steps, scaling, wall minutes, epochs and step timing, last logs."""
    stats = files.read_jsonl(run_dir / "stats.jsonl")
    health = files.read_jsonl(run_dir / "health.jsonl") if (run_dir / "health.jsonl").is_file() else []
    return {
        "run": spec.name, "file": f"{spec.slug}.tar", "g_steps": spec.g_steps, "scaling": spec.scaling,
        "time_budget_minutes": config.time_budget_minutes, "epochs_planned": config.epochs, "wall_minutes": round(seconds / 60.0, 3),
        **gpu_job.step_timing(stats, config.batch_size), "batch_size": config.batch_size,
        "last_stats": stats[-1] if stats else None, "last_health": health[-1] if health else None, "run_dir": str(run_dir),
    }


def pack_run(run_dir, tar_file, n_samples=500, strip_seeds=(0, 1), strip_steps=8):
    """Write the samples, the interpolation strip, the last grid and the grid montage into `run_dir`, then
    PACKED files of it into one uncompressed `tar_file` (the PNGs and the .npz are compressed already)."""
    run_dir = pathlib.Path(run_dir)
    generator = runs_lib.load_generator(run_dir)  # shows its outputs through its scaling (`sampling`)
    images = sampling.generate(generator, range(n_samples))  # [N, 128, 128, 1] in [-1, 1]
    save_samples(run_dir / "samples.npz", images, generator.output_scaling)
    strip = sampling.interpolate(generator, *strip_seeds, steps=strip_steps)  # [K, 128, 128, 1]
    sampling.save_strip(strip, run_dir / "interpolation.png")
    grids = sorted(run_dir.glob("samples-*.png"))
    if grids:
        shutil.copyfile(grids[-1], run_dir / "samples.png")
        grid_montage(grids, run_dir / "montage.png")
    with tarfile.open(tar_file, "w") as tar:
        for name in PACKED:
            if (run_dir / name).is_file():
                tar.add(run_dir / name, arcname=name)
    return tar_file


def save_samples(file, images, scale):
    """Images [N, 128, 128, 1] in [-1, 1] -> compressed .npz of `samples` uint8 [N, 128, 128] and `scaling`."""
    samples = decoding.to_uint8(images)[..., 0]  # [N, 128, 128]
    return files.write_atomic(file, lambda fh: np.savez_compressed(fh, samples=samples, scaling=np.array(scale)))


def load_samples(folder):
    """The `samples.npz` of an unpacked run -> float32 [N, 128, 128, 1] in [-1, 1]."""
    file = pathlib.Path(folder) / "samples.npz"
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist; is {folder} a run unpacked from a paper job (paper_job.unpack)?")
    with np.load(file, allow_pickle=False) as z:
        samples = z["samples"]  # [N, 128, 128] uint8
    return (samples.astype(np.float32) / 127.5 - 1.0)[..., None]  # [N, 128, 128, 1]


def grid_montage(grids, out_file, frames=8, width=320, cols=4):
    """Up to `frames` sample-grid PNGs (oldest first; evenly spaced, the last always among them), each scaled
    to `width` pixels and labelled with its epoch, in rows of `cols` -> one PNG."""
    grids = list(grids)
    pick = sorted({int(i) for i in np.linspace(0, len(grids) - 1, min(frames, len(grids))).round()})
    tiles = [_labelled(grids[i], width) for i in pick]
    cols = min(cols, len(tiles))
    rows = -(-len(tiles) // cols)
    w, h = tiles[0].size
    montage = Image.new("L", (cols * (w + 4) - 4, rows * (h + 4) - 4), 0)
    for k, tile in enumerate(tiles):
        montage.paste(tile, ((k % cols) * (w + 4), (k // cols) * (h + 4)))
    return files.write_atomic(out_file, lambda fh: montage.save(fh, format="PNG"))


def _labelled(grid_file, width, band=14):
    """One grid PNG scaled to `width`, under a band reading "epoch N" (from its name samples-<N>.png)."""
    with Image.open(grid_file) as image:
        image = image.convert("L")
        scaled = image.resize((width, round(image.height * width / image.width)), Image.Resampling.BOX)
    tile = Image.new("L", (width, scaled.height + band), 0)
    tile.paste(scaled, (0, band))
    ImageDraw.Draw(tile).text((2, 1), f"epoch {int(pathlib.Path(grid_file).stem.split('-')[-1])}", fill=255)
    return tile


# ---------------------------------------------------------------- back on the CPU machine

def read_job(job_dir):
    """The job.json of a returned paper-job folder."""
    return files.read_json(pathlib.Path(job_dir) / "job.json", fix="pass the folder a paper job wrote (tools/gpu_run.sh paper)")


def unpack(job_dir, dest=None):
    """Extract every run's tar of a returned paper-job folder into `dest/<run>/` (default: `<job_dir>-runs`
    beside it; the returned folder is left as it came) -> {run name: folder}, in the job's order."""
    job_dir = pathlib.Path(job_dir)
    job = read_job(job_dir)
    dest = pathlib.Path(dest) if dest else job_dir.with_name(job_dir.name + "-runs")
    out = {}
    for entry in job.get("runs", []):
        tar_file = job_dir / entry["file"]
        if not tar_file.is_file():
            raise FileNotFoundError(f"{tar_file} is missing: job.json lists it; copy back every file of the job")
        folder = dest / tar_file.stem
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tar_file) as tar:
            tar.extractall(folder, filter="data")  # plain files only, nothing outside `folder`
        out[entry["run"]] = folder
    if not out:
        raise ValueError(f"{job_dir}/job.json lists no finished run; nothing to unpack")
    return out


def run_folders(path):
    """Folders to draw the paper's figures from -> {name: folder}: a returned job folder (unpacked beside it),
    one unpacked run, or a training run folder (both hold stats.jsonl)."""
    path = pathlib.Path(path)
    if (path / "job.json").is_file() and any(path.glob("*.tar")):
        return unpack(path)
    if (path / "stats.jsonl").is_file():
        return {path.name: path}
    raise FileNotFoundError(f"{path} is neither a returned paper job (job.json and *.tar) nor a run folder (stats.jsonl)")


def samples_of(folder, n=16):
    """`n` samples of a run folder, in [-1, 1] as its scaling shows them: its samples.npz when it has one,
    else seeds 0..n-1 of its newest checkpoint's generator."""
    folder = pathlib.Path(folder)
    if (folder / "samples.npz").is_file():
        return load_samples(folder)[:n]
    return sampling.generate(runs_lib.load_generator(folder), range(n))


def interpolation_strip(folder, seeds=(0, 1), steps=8):
    """Path of the run folder's interpolation.png, written from its newest checkpoint when it has none."""
    folder = pathlib.Path(folder)
    strip = folder / "interpolation.png"
    if not strip.is_file():
        scale = config_lib.Config.load(folder).scaling
        sampling.save_strip(scaling.to_view(sampling.interpolate(runs_lib.load_generator(folder), *seeds, steps=steps), scale), strip)
    return strip


def summary(scores):
    """One report column (`report["generated"]` or a baseline) -> {metric label: value or None} (report.SUMMARY_ROWS)."""
    out = {}
    for label, get in report_lib.SUMMARY_ROWS:
        try:
            out[label] = float(get(scores))
        except (KeyError, TypeError):
            out[label] = None
    return out


def score_job(job_dir, data_file=None, dest=None, n=500, features="auto", out_file=None, ms_ssim_pairs=500):
    """Unpack a returned paper job, score each run's samples against the validation split of its config
    (`report.evaluate_images`, also writing `<run>/metrics-<features>.json`) and write the table JSON
    {"features", "n", "runs": {name: {"epochs", metric: value}}, "floor": {...}} -> its path
    (default `<dest>/scores.json`)."""
    folders = unpack(job_dir, dest)
    table, splits = {"features": None, "n": n, "runs": {}}, {}
    for name, folder in folders.items():
        config = config_lib.Config.load(folder)
        key = (tuple(config.classes), config.flip, config.val_fraction, config.split_seed)
        if key not in splits:
            splits[key] = dataset.load_split(data_file, classes=key[0], flip=key[1], val_fraction=key[2], seed=key[3])
        train_ds, val_ds = splits[key]
        if not len(val_ds):
            raise ValueError(f"the split of the data (val_fraction {config.val_fraction}, seed {config.split_seed}) holds out no image to score {name} against")
        report = report_lib.evaluate_images(load_samples(folder), val_ds.images, train_ds.images, n=n, features=features, ms_ssim_pairs=ms_ssim_pairs)
        report_lib.write_report(report, folder / f"metrics-{report['features']}.json")
        stats = files.read_jsonl(folder / "stats.jsonl")
        table["features"] = report["features"]
        row = {"epochs": stats[-1]["epoch"] if stats else 0, "scaling": config.scaling, "g_steps": config.g_steps}
        table["runs"][name] = {**row, **summary(report["generated"])}
        table.setdefault("floor", summary(report["baselines"]["floor"]))
        table.setdefault("real_ms_ssim", report["real_ms_ssim"])
    out_file = pathlib.Path(out_file) if out_file else next(iter(folders.values())).parent / "scores.json"
    files.write_text_atomic(out_file, json.dumps(table, indent=2) + "\n")
    return out_file
