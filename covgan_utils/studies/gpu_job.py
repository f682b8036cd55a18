"""One GPU job: train a preset on a data cache, then leave a handful of small files worth bringing back.

`run_job` (CLI: `gpu-job`) is the second half of `tools/gpu_run.sh`: on a machine without network it
trains `covgan_utils.training.loop.train` on an `export_cache` .npz and writes into one output folder at most
MAX_FILES files, each under MAX_FILE_BYTES:

- `generator.npz`, `config.json`, `source.json`: the float16 EMA generator, as `runs.export_release`
  writes it (`runs.load_release(out_dir)` reads it back);
- `stats.jsonl`: the run's per-epoch losses and seconds; `samples.png`: its last fixed-seed grid;
- `metrics.json`: `report_lib.evaluate_images` of `n_eval` samples of that generator on domain features;
- `job.json`: device, Keras backend, wall minutes, epochs, steps and seconds per step.
"""
import json
import pathlib
import shutil
import time

from covgan_utils import config as config_lib
from covgan_utils import runs, sampling
from covgan_utils.data import dataset, sources
from covgan_utils.metrics import report as report_lib
from covgan_utils.training import loop
from covgan_utils.util import files, hardware

MAX_FILES = 8


MAX_FILE_BYTES = 16 * 2**20


DEFAULT_MINUTES = 8.0


def run_job(data_file, out_dir, preset="gpu", minutes=DEFAULT_MINUTES, run_dir=None, epochs=None, n_eval=500, verbose=True, devices=1):
    """Train `preset` on `data_file` for about `minutes` (and at most `epochs`) on `devices` devices
    (data-parallel), export, score; returns `out_dir`."""
    if n_eval < 8:
        raise ValueError(f"n_eval must be at least 8 (KID needs them), got {n_eval}")
    config = _job_config(preset, minutes, epochs).replace(devices=devices)
    data_file = sources.find_data_dir(data_file)
    out_dir = empty_folder(out_dir)
    started = time.time()
    run_dir = pathlib.Path(loop.train(config, run_dir, data_dir=data_file, verbose=verbose))
    train_seconds = time.time() - started
    collect_run(run_dir, out_dir)
    job = describe_job(run_dir, config, train_seconds)
    write_json(job, out_dir / "job.json")  # written before scoring: a failed evaluation still leaves a usable job
    check_outputs(out_dir)
    started = time.time()
    score_release(out_dir, data_file, config, n_eval)
    job["eval_minutes"] = round((time.time() - started) / 60.0, 3)
    write_json(job, out_dir / "job.json")
    return check_outputs(out_dir)


def empty_folder(folder, flag="--out"):
    """`folder`, made when missing; a one-line ValueError naming `flag` when it holds anything."""
    folder = pathlib.Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"{flag} {folder} is not empty; choose a new folder or remove it")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _job_config(preset, minutes, epochs):
    if minutes is None or minutes <= 0:
        raise ValueError(f"minutes must be positive, got {minutes}")
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    overrides = {"time_budget_minutes": float(minutes)}
    if epochs is not None:
        overrides["epochs"] = int(epochs)
    return config_lib.get_preset(preset, **overrides)


def collect_run(run_dir, out_dir):
    """Release files (generator.npz, config.json, source.json), stats.jsonl and the last samples grid -> `out_dir`."""
    runs.export_release(run_dir, release_dir=out_dir)
    stats = run_dir / "stats.jsonl"
    if not stats.is_file():
        raise ValueError(f"{run_dir} has no stats.jsonl: did training run an epoch?")
    shutil.copyfile(stats, out_dir / "stats.jsonl")
    grids = sorted(run_dir.glob("samples-*.png"))
    if grids:
        shutil.copyfile(grids[-1], out_dir / "samples.png")


def step_timing(rows, batch_size):
    """{epochs_done, steps_per_epoch, steps, seconds_per_step_mean, ..._after_first_epoch} from stats.jsonl rows."""
    if not rows:
        return {"epochs_done": 0, "steps_per_epoch": None, "steps": 0, "seconds_per_step_mean": None, "seconds_per_step_after_first_epoch": None}
    last = rows[-1]
    steps_per_epoch = int(round(last["images_seen"] / last["epoch"] / batch_size)) if last.get("images_seen") else None
    per_step = [r["seconds"] / steps_per_epoch for r in rows if "seconds" in r] if steps_per_epoch else []
    mean = lambda xs: round(sum(xs) / len(xs), 5) if xs else None  # noqa: E731
    return {
        "epochs_done": int(last["epoch"]),
        "steps_per_epoch": steps_per_epoch,
        "steps": int(last["epoch"]) * steps_per_epoch if steps_per_epoch else None,
        "seconds_per_step_mean": mean(per_step),
        "seconds_per_step_after_first_epoch": mean(per_step[1:]),  # without compilation
    }


def describe_job(run_dir, config, train_seconds):
    """job.json content: device, backend, preset, wall minutes of training, epochs and step timing."""
    timing = step_timing(files.read_jsonl(run_dir / "stats.jsonl"), config.batch_size)
    return {
        **hardware.device_info(),
        "preset": config.preset,
        "time_budget_minutes": config.time_budget_minutes,
        "epochs_planned": config.epochs,
        "wall_minutes": round(train_seconds / 60.0, 3),
        **timing,
        "batch_size": config.batch_size,
        "run_dir": str(run_dir),
    }


def score_release(out_dir, data_file, config, n_eval):
    """metrics.json: `n_eval` samples of the exported generator against the run's held-out split (domain features)."""
    generator = runs.load_release(out_dir)
    generated = sampling.generate(generator, range(n_eval))
    train_ds, val_ds = dataset.load_split(data_file, classes=config.classes, flip=config.flip, val_fraction=config.val_fraction, seed=config.split_seed)
    if not len(val_ds):
        raise ValueError(f"the split of {data_file} (val_fraction {config.val_fraction}, seed {config.split_seed}) holds out no {'/'.join(config.classes)} image to score against")
    report = report_lib.evaluate_images(generated, val_ds.images, train_ds.images, n=n_eval, features="domain")
    report["source"] = {"generator": "generator.npz (float16 EMA weights, as returned)", "data": pathlib.Path(data_file).name}
    return report_lib.write_report(report, out_dir / "metrics.json")


def write_json(obj, file):
    pathlib.Path(file).write_text(json.dumps(obj, indent=2) + "\n")
    return file


def check_outputs(out_dir):
    """`out_dir` when it holds at most MAX_FILES plain files, each under MAX_FILE_BYTES; else ValueError naming them."""
    out_dir = pathlib.Path(out_dir)
    entries = sorted(out_dir.iterdir())
    if len(entries) > MAX_FILES:
        raise ValueError(f"{out_dir} holds {len(entries)} entries, at most {MAX_FILES} may come back: {', '.join(p.name for p in entries)}")
    folders = [p.name for p in entries if not p.is_file()]
    if folders:
        raise ValueError(f"{out_dir} may hold only files, found {', '.join(folders)}")
    big = [f"{p.name} ({p.stat().st_size / 2**20:.1f} MB)" for p in entries if p.stat().st_size >= MAX_FILE_BYTES]
    if big:
        raise ValueError(f"file(s) in {out_dir} over the {MAX_FILE_BYTES // 2**20} MB limit: {', '.join(big)}")
    return out_dir
