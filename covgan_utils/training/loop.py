"""The training job: `train(config, run_dir)` builds the `GAN`, loads the data (or takes it), resumes from
the newest loadable checkpoint, and runs the epochs with the run's callbacks.

A resumed run equals an uninterrupted one: epoch counter, weights, optimizer state, augmentation and
noise streams all come back from the checkpoint.
"""
import json
import pathlib
import shutil
import warnings

import numpy as np

from covgan_utils import checkpoints
from covgan_utils import config as config_lib
from covgan_utils.checkpoints import latest_checkpoint
from covgan_utils.data import scaling
from covgan_utils.data.dataset import training_split
from covgan_utils.runs import latest_run, new_run_dir
from covgan_utils.training import callbacks as callbacks_lib
from covgan_utils.training import distribute, guard
from covgan_utils.training.callbacks import (
    Checkpointer,
    ProgressBar,
    RunLogger,
    SampleGrid,
    TimeBudget,
)
from covgan_utils.training.gan import GAN, resolved_precision, seed_everything
from covgan_utils.training.tensorboard import TensorBoardLogger
from covgan_utils.util import files, hardware


class RepairedLogWarning(UserWarning):
    """A run's *.jsonl log ended in a half-written line (a kill during a write); the line was dropped."""


def _records(file):
    """(line, record) pairs of a *.jsonl log; a half-written LAST line is dropped with a warning, a bad
    line before it is a one-line error naming the file and the line."""
    lines = [ln for ln in file.read_text(errors="replace").splitlines() if ln.strip()]
    out = []
    for number, line in enumerate(lines, 1):
        try:
            out.append((line, json.loads(line)))
        except ValueError:
            if number < len(lines):
                raise ValueError(f"{file}: line {number} is not JSON; restore the file or train into a new folder") from None
            warnings.warn(f"{file}: dropped a half-written last line (left by a killed write)", RepairedLogWarning, stacklevel=3)
    return out


def truncate_jsonl(run_dir, epoch):
    """Drop lines with epoch > `epoch` from every *.jsonl log in `run_dir` (used on resume); a half-written
    last line is repaired with a warning naming the file."""
    for file in pathlib.Path(run_dir).glob("*.jsonl"):
        kept = [line for line, record in _records(file) if not isinstance(record, dict) or record.get("epoch", 0) <= epoch]
        files.write_text_atomic(file, "".join(ln + "\n" for ln in kept))


# ---------------------------------------------------------------- data pipeline

def epoch_order(n, batch_size, seed, epoch):
    """Row indices [k, B] of one epoch's k = n // B batches: a permutation of the n training images fixed
    by (seed, epoch), full batches only. Plain NumPy, the same under every backend."""
    if n < batch_size:
        raise ValueError(f"batch size {batch_size} is larger than the {n} training images")
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(n)  # [n]
    k = n // batch_size
    return order[: k * batch_size].reshape(k, batch_size).astype(np.int32)  # [k, B]


# ---------------------------------------------------------------- the job

def train(config, run_dir=None, data_dir=None, resume=False, callbacks=(), images=None, verbose=True, labels=None):
    """Train `config` in `run_dir` (a new `models/<NNNNN>-<preset>/` when None); returns the run folder.

    `resume=True` continues from the newest checkpoint in `run_dir`: epoch counter, weights, optimizer
    state, augmentation and noise streams, so the result equals an uninterrupted run; `epochs` and
    `time_budget_minutes` come from `config`, everything else from the run's config.json. `images`
    (and, for a conditional config, `labels` [N] class indices) override the data (tests). A training
    that fails before its first checkpoint removes the run folder it created.
    """
    created = not resume and (run_dir is None or not pathlib.Path(run_dir).exists())
    distribute.check_devices(config)
    hardware.warn_if_slow_backend()
    config = resolved_precision(config)  # "auto" -> this machine's fast precision, recorded in config.json
    run_dir = _prepare_run_dir(config, run_dir, resume)
    try:
        with distribute.scope(config):  # one device, or DataParallel over `devices`
            return _run(config, run_dir, data_dir, resume, callbacks, images, verbose, labels)
    except BaseException:
        if created and latest_checkpoint(run_dir) is None:
            shutil.rmtree(run_dir, ignore_errors=True)  # no folder holding only config.json becomes the "newest run"
        raise


def _run(config, run_dir, data_dir, resume, callbacks, images, verbose, labels):
    if resume:
        config = _resumable_config(config, run_dir)
    config.save(run_dir)
    if images is None:
        images, labels, val_images, val_labels = training_split(config, data_dir)
    else:
        val_images, val_labels = images, None
    if config.conditional:
        labels = _checked_labels(config, images, labels)
        val_labels = labels if val_labels is None else val_labels
        compared = (images[labels == 0], val_images[val_labels == 0])  # samples default to class 0: compare with class 0
    else:
        labels, compared = None, (images, val_images)
    seed_everything(config.seed)  # initial weights and dropout streams follow the seed
    gan = GAN(config)
    gan.compile()
    initial_epoch = 0
    if resume:
        checkpoints.remove_temp_files(run_dir)  # left by a write that was killed: never a checkpoint
        if latest_checkpoint(run_dir) is None:
            raise ValueError(f"nothing to resume: no checkpoint-*.npz in {run_dir}")
        # newest checkpoint that loads (all or nothing); damaged newer ones are skipped with a warning
        ckpt, initial_epoch, skipped = checkpoints.load_newest(run_dir, gan.load_checkpoint)
        for path in skipped:  # training goes on from `ckpt`: the damaged files must not count as newer checkpoints
            checkpoints.set_aside(path)
        truncate_jsonl(run_dir, initial_epoch)
    if initial_epoch >= config.epochs:
        return run_dir
    steps_per_epoch = len(images) // config.batch_size
    all_callbacks = _callbacks(config, run_dir, gan, *compared, steps_per_epoch, initial_epoch, verbose) + list(callbacks)
    images = scaling.to_training(images, config.scaling)  # float32; "paper-code": the paper's near-black [-1, -0.992]
    data = images if labels is None else (images, labels[:, None].astype(np.int32))  # [N, 128, 128, 1] (, [N, 1])
    gan.run_epochs(data, lambda epoch: epoch_order(len(images), config.batch_size, config.seed, epoch), initial_epoch, config.epochs, all_callbacks)
    return run_dir


def _checked_labels(config, images, labels):
    """Class indices [N] int32 for a conditional run, checked against `config.classes`."""
    if labels is None:
        raise ValueError("a conditional config needs class labels for its images (pass labels=, or let train() load the data)")
    k = len(config.classes)
    if k < 2:
        raise ValueError(f"conditional=true needs two or more classes, got classes={list(config.classes)}; set classes=CT_COVID,CT_NonCOVID")
    labels = np.asarray(labels).astype(np.int32).reshape(-1)
    if len(labels) != len(images) or labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must be {len(images)} class indices in [0, {k - 1}] (config.classes = {list(config.classes)})")
    return labels


MODEL_FIELDS = (
    "arch", "latent_dim", "g_base_width", "g_widths", "d_widths", "upsample", "g_block_convs", "g_out_kernel", "spectral_norm",
    "g_noise", "w_dim", "mapping_layers", "mbstd_group", "d_equalized", "conditional", "classes", "blocks_per_stage", "expansion",
    "group_width",
)


def _resumable_config(requested, run_dir):
    """The run's own config.json with the requested `epochs`, time budget and device count; refuses a run of another
    preset or architecture, naming both."""
    saved = config_lib.Config.load(run_dir)
    differ = [f for f in ("preset",) + MODEL_FIELDS if getattr(saved, f) != getattr(requested, f)]
    if differ:
        pairs = ", ".join(f"{f} {getattr(saved, f)!r} (asked: {getattr(requested, f)!r})" for f in differ)
        raise ValueError(f"--resume: {run_dir} holds a run with {pairs}; resume it with --preset {saved.preset} or train into another folder")
    return saved.replace(epochs=requested.epochs, time_budget_minutes=requested.time_budget_minutes, devices=requested.devices)


def _prepare_run_dir(config, run_dir, resume):
    if resume:
        run_dir = pathlib.Path(run_dir) if run_dir else latest_run(preset=config.preset)
        if run_dir is None or not run_dir.is_dir():
            raise ValueError(f"nothing to resume: no run folder {run_dir or 'for preset ' + config.preset}")
        return run_dir
    if run_dir is None:
        return new_run_dir(config.preset)
    run_dir = pathlib.Path(run_dir)
    if run_dir.is_dir() and latest_checkpoint(run_dir) is not None:
        raise ValueError(f"{run_dir} already holds a run; pass --resume to continue it or choose another folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _callbacks(config, run_dir, gan, images, val_images, steps, initial_epoch, verbose):
    board = TensorBoardLogger(run_dir, steps)
    out = [board.clock, RunLogger(run_dir, steps * config.batch_size)]  # the clock first: it times the steps only
    if config.time_budget_minutes:
        out.append(TimeBudget(config.time_budget_minutes))
    if config.guard:
        out.append(guard.DivergenceGuard(run_dir, config, images))
    if config.metrics_every:
        out.append(callbacks_lib.MetricsCallback(run_dir, val_images, images, every=config.metrics_every, features=config.metrics_features))
    out += [
        SampleGrid(run_dir, range(config.grid_seeds), config.sample_every, config.epochs),
        board,  # after SampleGrid: logs the grid of the epoch
        Checkpointer(run_dir, config.checkpoint_every, config.keep_checkpoints, config.epochs),
    ]
    if verbose:
        out.append(ProgressBar(initial_epoch, config.epochs))
    return out
