"""One worker process of `bench`: a process has one Keras backend, so the parent starts one per backend and
configuration (`python -m covgan_utils bench --worker SPEC.json`, `KERAS_BACKEND` set) and merges their JSON.

Jobs: `probe` (the device, before the plan is chosen), `config` (one preset and precision: project step,
project step with the extras off, textbook step, PyTorch loop, FLOPs, peak memory, in-training step) and
`device` (matmul peaks and the batch sweep). A configuration job times the project step first, in a fresh
process, and reads the peak memory right after it, so that number is the project step's own.
"""
import json
import pathlib
import statistics
import tempfile
import time
import traceback
import warnings

import keras
import numpy as np

from covgan_utils import config as config_lib
from covgan_utils.bench import flops, textbook, timing, torch_loop
from covgan_utils.bench import plan as plan_lib
from covgan_utils.data import dataset, decoding
from covgan_utils.training import loop
from covgan_utils.util import files, hardware


def run(spec, say=print):
    """Run the job `spec` (a dict, "kind" one of probe | config | device) -> its result dict."""
    jobs = {"probe": probe, "config": measure_config, "device": measure_device}
    if spec.get("kind") not in jobs:
        raise ValueError(f"unknown bench job {spec.get('kind')!r}; choose from {', '.join(jobs)}")
    return jobs[spec["kind"]](spec, say)


def run_file(path):
    """The worker's entry: read the spec file, run it, write the result to the spec's "out" file."""
    spec = files.read_json(path, "it is written by the parent `bench` process")
    result = run(spec, say=lambda line: print(line, flush=True))
    files.write_text_atomic(spec["out"], json.dumps(result, indent=1) + "\n")


def probe(spec=None, say=print):
    """The device the backend computes on."""
    return {"backend": keras.backend.backend(), "hardware": hardware.hardware(), "gpu": bool(hardware.gpus_seen()),
            "fast_precision": hardware.fast_precision(), "info": hardware.device_info()}


def versions():
    """{library: version} of the running backend, Keras, Python and (when installed) PyTorch."""
    info = hardware.device_info()
    out = {k.removesuffix("_version"): v for k, v in info.items() if k.endswith("_version")}
    out["python"] = info["host"]["python"]
    try:
        import torch
    except ImportError:
        return out
    return {**out, "torch": torch.__version__}


def images_for(config):
    """(training images [N, 128, 128, 1] in [-1, 1], what they are): the real train split when the data is
    found, else seeded uniform noise of the same size."""
    try:
        images = dataset.training_split(config)[0]
        return np.asarray(images, np.float32), f"real training images ({len(images)}, the patient-level train split)"
    except (decoding.DataError, FileNotFoundError):
        noise = np.random.default_rng(0).uniform(-1, 1, (480, 128, 128, 1)).astype(np.float32)  # [480, 128, 128, 1]
        return noise, "random images in [-1, 1] (no data found)"


def fixed_batch(images, batch_size):
    """The first `batch_size` images (repeated when there are fewer) [B, 128, 128, 1]."""
    return images[np.arange(batch_size) % len(images)]


def _attempt(row, name, fn):
    """fn() -> its value; a failure is recorded in row["errors"][name] as one line and gives None."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 -- one measurement failing (out of memory, a backend limit) keeps the others
        row.setdefault("errors", {})[name] = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
        traceback.print_exc()
        return None


PARTS = ("project", "extras_off", "textbook", "torch", "in_training")


def measure_config(spec, say=print):
    """The per-configuration measurements of (preset, precision) under the running backend: every one of
    PARTS, or those of spec["parts"]. Fields of a measurement not taken are None."""
    cfg = config_lib.get_preset(spec["preset"], precision=spec["precision"])
    parts = spec.get("parts") or PARTS
    images, data = images_for(cfg)
    row = {"preset": cfg.preset, "backend": keras.backend.backend(), "precision": cfg.precision, "batch": cfg.batch_size,
           "device": hardware.hardware(), "data": data, "parts": list(parts), "steps": {}, "flops": None, "peak_memory_bytes": None,
           "memory_kind": None, "torch_note": None, "torch_threads": None, "in_training": None, **{f"{p}_ms": None for p in PARTS},
           "extras_off_over_textbook": None, "in_training_over_project": None, "paired_rounds": None}
    job = _Job(cfg, spec, row, fixed_batch(images, cfg.batch_size), images, f"{row['backend']} {cfg.preset} {cfg.precision}", say)
    for part in PARTS:
        if part in parts:
            getattr(job, part)()
    if row["flops"] is None:
        row["flops"] = flops.count(*textbook.build_models(cfg), cfg.batch_size, g_steps=1)
    row["process_peak_bytes"] = timing.peak_memory()[0]
    return row


class _Job:
    """The measurements of one configuration, each writing its fields into `row`."""

    def __init__(self, cfg, spec, row, batch, images, label, say):
        self.cfg, self.spec, self.row, self.batch, self.images, self.label, self.say = cfg, spec, row, batch, images, label, say
        self.steps = spec["steps"]

    def _timed(self, name, fn):
        seconds = _attempt(self.row, name, fn)
        self.row[f"{name}_ms"] = None if seconds is None else 1000 * seconds
        self.row["steps"][name] = self.steps
        self.say(f"{self.label}: {name.replace('_', ' ')} " + (f"failed: {self.row['errors'][name]}" if seconds is None
                                                               else f"{1000 * seconds:.1f} ms per step ({self.steps} steps)"))

    def project(self):
        """The project step first, in a fresh process: the peak memory read right after it is its own."""
        self._timed("project", lambda: timing.project_step(self.cfg, self.batch, self.steps))
        self.row["peak_memory_bytes"], self.row["memory_kind"] = timing.peak_memory()

    def extras_off(self):
        if "textbook" in self.row["parts"]:
            return self._paired_with_textbook()
        self._timed("extras_off", lambda: timing.project_step(timing.extras_off(self.cfg), self.batch, self.steps))

    def _paired_with_textbook(self):
        """The extras-off and textbook steps in paired rounds (`timing.paired`): same work, same machine phase."""
        step = textbook.make_step(timing.extras_off(self.cfg))
        self.row["flops"] = flops.count(step.generator, step.discriminator, self.cfg.batch_size, g_steps=1)
        calls = {"extras_off": timing.project_caller(timing.extras_off(self.cfg), self.batch, self.steps),
                 "textbook": ((lambda _: step(self.batch)), [None] * self.steps)}
        rounds = min(ROUNDS, self.steps)
        result = _attempt(self.row, "extras_off", lambda: timing.paired(calls, rounds))
        for name in calls:
            self.row[f"{name}_ms"] = None if result is None else 1000 * result[0][name]
            self.row["steps"][name] = self.steps
        if result:
            self.row["extras_off_over_textbook"] = timing.median_ratio(result[1]["extras_off"], result[1]["textbook"])
            self.row["paired_rounds"] = {name: [1000 * s for s in rs] for name, rs in result[1].items()}
        self.say(f"{self.label}: extras off / textbook " + (f"failed: {self.row['errors']['extras_off']}" if result is None else
                 f"{self.row['extras_off_ms']:.1f} / {self.row['textbook_ms']:.1f} ms per step, median ratio of {rounds} paired rounds "
                 f"{self.row['extras_off_over_textbook']:.3f} ({self.steps} steps each)"))

    def textbook(self):
        """Timed with the extras-off step (`_paired_with_textbook`)."""

    def torch(self):
        result = _attempt(self.row, "torch", lambda: torch_loop.time_loop(self.cfg, self.batch, self.steps)) or {"note": "n/a (failed)"}
        self.row.update(torch_ms=result.get("ms"), torch_note=result.get("note"), torch_threads=result.get("threads"))
        self.row["steps"]["torch"] = result.get("steps")
        self.say(f"{self.label}: torch " + (f"{result['ms']:.1f} ms per step ({self.steps} steps)" if "ms" in result else result["note"]))

    def in_training(self):
        epochs, n = self.spec["train_epochs"], plan_lib.training_count(self.spec["train_images"], self.cfg.batch_size, len(self.images))
        result = _attempt(self.row, "in_training", lambda: in_training(self.cfg, self.images[:n], epochs, self.batch))
        self.row.update(in_training_ms=None if result is None else result["ms"], in_training=result)
        if result:
            self.row["in_training_over_project"] = result["over_project"]
        self.row["steps"].update(in_training_epochs=epochs, in_training_steps_per_epoch=n // self.cfg.batch_size)
        self.say(f"{self.label}: in training " + (f"{result['ms']:.1f} ms per step (median of epochs 2..{epochs}, {n // self.cfg.batch_size} steps each); "
                                                  f"over the bare step timed after each epoch: median {result['over_project']:.3f}"
                                                  if result else f"failed: {self.row['errors']['in_training']}"))


ROUNDS = 5  # paired rounds of the extras-off / textbook comparison (at most one per timed step)


class _StepBeside(keras.callbacks.Callback):
    """After every training epoch (outside its timed span: after RunLogger), the bare compiled step is timed
    for the steps that epoch ran, with their lazy-R1 flags: the pair of the in-training comparison."""

    def __init__(self, config, batch, steps_per_epoch):
        super().__init__()
        self.call, self.variants = timing.project_caller(config, batch, steps_per_epoch * config.epochs)
        self.k, self.seconds = steps_per_epoch, []

    def on_epoch_end(self, epoch, logs=None):
        flags = self.variants[epoch * self.k:(epoch + 1) * self.k]  # the discriminator steps of this epoch
        if not self.seconds:
            timing.warm(self.call, self.variants)
        self.seconds.append(timing.seconds_per_call(self.call, flags, "g_loss", warm_up=False))


def in_training(config, images, epochs, batch):
    """Milliseconds per step inside a short real training (`loop.train`): the median over epochs after the
    first (which compiles) of stats.jsonl's `seconds`, divided by the steps per epoch; and its ratio to the
    bare project step on `batch`, timed after each epoch for as many steps (median of the per-epoch ratios)."""
    cfg = config.replace(epochs=epochs, metrics_every=0, guard=False, sample_every=epochs, checkpoint_every=epochs,
                         time_budget_minutes=0.0, max_images=0)
    steps_per_epoch = len(images) // cfg.batch_size
    beside = _StepBeside(cfg, batch, steps_per_epoch)
    with tempfile.TemporaryDirectory(prefix="covgan-bench-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the slow-backend warning of JAX on a CPU: known here
        run_dir = loop.train(cfg, run_dir=pathlib.Path(tmp) / "run", images=images, verbose=False, callbacks=[beside])
        seconds = [row["seconds"] for row in files.read_jsonl(run_dir / "stats.jsonl")]
    per_step = [s / steps_per_epoch for s in seconds]
    return {"ms": 1000 * statistics.median(per_step[1:]), "epoch_seconds": seconds, "steps_per_epoch": steps_per_epoch, "images": len(images),
            "bare_step_ms": [1000 * s for s in beside.seconds], "over_project": timing.median_ratio(per_step[1:], beside.seconds[1:])}


def measure_device(spec, say=print):
    """Measured matmul peaks in the plan's dtypes, and the project step over the batch sweep."""
    name = keras.backend.backend()
    out = {"backend": name, "device": hardware.hardware(), "versions": versions(), "matmul": [], "sweep": [], "errors": {}}
    for dtype in spec["dtypes"]:
        peak = _attempt(out, f"matmul {dtype}", lambda dtype=dtype: timing.matmul_peak(spec["matmul_size"], dtype, spec["matmul_repeats"]))
        if peak:
            out["matmul"].append({"backend": name, **peak})
            say(f"{name}: matmul {dtype} {peak['size']}x{peak['size']}: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s (best of {spec['matmul_repeats']})")
    if spec.get("sweep_batches"):
        images, _ = images_for(config_lib.get_preset(spec["sweep_preset"]))
        for size in spec["sweep_batches"]:
            cfg = config_lib.get_preset(spec["sweep_preset"], batch_size=size, precision=spec["sweep_precision"])
            start = time.perf_counter()
            seconds = _attempt(out, f"sweep {size}", lambda cfg=cfg: timing.project_step(cfg, fixed_batch(images, cfg.batch_size), spec["sweep_steps"]))
            if seconds:
                out["sweep"].append({"backend": name, "preset": cfg.preset, "precision": cfg.precision, "batch": size, "ms": 1000 * seconds,
                                     "images_per_s": size / seconds, "steps": spec["sweep_steps"]})
            say(f"{name}: batch sweep {cfg.preset} batch {size}: " + (f"{1000 * seconds:.1f} ms per step, {size / seconds:.0f} images/s"
                                                                     if seconds else "failed") + f" ({time.perf_counter() - start:.0f} s)")
    out["peak_memory_bytes"], out["memory_kind"] = timing.peak_memory()
    return out
