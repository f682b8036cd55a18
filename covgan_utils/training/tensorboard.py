"""TensorBoard logs of a run: event files in `<run_dir>/tensorboard/` with, per epoch, the epoch-mean
training logs, seconds per step, learning rates, new metric lines and the epoch's sample grid.

Written with the `tensorboard` package's pure-Python record writer and protos, never TensorFlow: the
JAX path stays TensorFlow-free (`EventFileWriter` is not used: it resolves `tensorboard.compat.tf`,
which imports TensorFlow when installed). Without the package the callback does nothing and warns once.
View the logs of every run with `tensorboard --logdir models/`.
"""
import itertools
import json
import os
import pathlib
import socket
import struct
import time
import warnings

import keras

try:  # pure Python: the record framing (CRCs from TensorBoard's TensorFlow stub) and the protobufs
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter
except ImportError:
    event_pb2 = summary_pb2 = RecordWriter = None

AVAILABLE = RecordWriter is not None
FOLDER = "tensorboard"
NOT_INSTALLED = "tensorboard is not installed: this run writes no TensorBoard logs (pip install tensorboard)"
PNG_COLORSPACE = {0: 1, 4: 2, 2: 3, 3: 3, 6: 4}  # PNG colour type -> Summary.Image colorspace (grey, grey+alpha, RGB, RGBA)


class TensorBoardUnavailableWarning(UserWarning):
    """The `tensorboard` package is not installed: the run writes no TensorBoard logs."""


# ---------------------------------------------------------------- the writer

class EventWriter:
    """Writes `Event` protos to a new `events.out.tfevents.*` file in `logdir`; a resumed run adds a file
    next to the old ones and TensorBoard merges them."""

    _uid = itertools.count()

    def __init__(self, logdir):
        logdir = pathlib.Path(logdir)
        logdir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(self._uid)}"
        self.path = logdir / name
        self._records = RecordWriter(open(self.path, "wb"))
        self.write(event_pb2.Event(file_version="brain.Event:2"))

    def write(self, event):
        if not event.wall_time:
            event.wall_time = time.time()
        self._records.write(event.SerializeToString())

    def session_start(self, step):
        """Marks a (re)start at `step`: TensorBoard drops older events of steps >= `step` (left by a killed run)."""
        self.write(event_pb2.Event(step=step, session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))

    def scalars(self, step, values):
        """{tag: float} at `step`."""
        if values:
            summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=t, simple_value=v) for t, v in values.items()])
            self.write(event_pb2.Event(step=step, summary=summary))

    def png(self, step, tag, data):
        """An image summary of PNG bytes `data` at `step`."""
        width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
        image = summary_pb2.Summary.Image(height=height, width=width, colorspace=PNG_COLORSPACE.get(data[25], 1), encoded_image_string=data)
        self.write(event_pb2.Event(step=step, summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=image)])))

    def flush(self):
        self._records.flush()

    def close(self):
        self._records.close()


# ---------------------------------------------------------------- what an epoch logs

def _number(value):
    """`value` as a float, or None when it is no number."""
    if isinstance(value, (str, bytes, bool)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def train_scalars(logs):
    """`train/<key>` of every numeric epoch log (metric_* keys are logged from the metric files instead)."""
    out = {f"train/{k}": _number(v) for k, v in (logs or {}).items() if not k.startswith("metric_")}
    return {k: v for k, v in out.items() if v is not None}


def learning_rates(model):
    """{`lr/generator`, `lr/discriminator`: current learning rate} of the optimizers `model` has."""
    out = {}
    for tag, name in (("lr/generator", "g_optimizer"), ("lr/discriminator", "d_optimizer")):
        optimizer = getattr(model, name, None)
        if optimizer is not None:
            out[tag] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    return out


class MetricLines:
    """The lines appended to `<run_dir>/metric-*.jsonl` since the last read."""

    def __init__(self, run_dir):
        self.run_dir = pathlib.Path(run_dir)
        self.offsets = {}

    def skip_existing(self):
        """Start after what the files hold now (logged by an earlier session of the run)."""
        self.offsets = {f: f.stat().st_size for f in self.run_dir.glob("metric-*.jsonl")}

    def read(self, step):
        """[(step, `metrics/<name>`, value)] of the new complete lines; step from the line's epoch."""
        out = []
        for file in sorted(self.run_dir.glob("metric-*.jsonl")):
            with open(file, "rb") as fh:
                fh.seek(self.offsets.get(file, 0))
                data = fh.read()
            complete = data[: data.rfind(b"\n") + 1]  # a half-written last line waits for the next read
            self.offsets[file] = self.offsets.get(file, 0) + len(complete)
            out += [row for line in complete.splitlines() if (row := _metric_row(file, line, step))]
        return out


def _metric_row(file, line, step):
    try:
        record = json.loads(line)
    except ValueError:
        return None
    value = _number(record.get("value")) if isinstance(record, dict) else None
    if value is None:
        return None
    return int(record.get("epoch", step)), f"metrics/{file.stem[len('metric-'):]}", value


def _stat(path):
    """What changes when `path` is (re)written, or None when it does not exist."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


# ---------------------------------------------------------------- the callback

class EpochClock(keras.callbacks.Callback):
    """Stamps the end of an epoch's steps; placed first in the callback list, before any epoch-end work."""

    end = None

    def on_epoch_end(self, epoch, logs=None):
        self.end = time.perf_counter()


class TensorBoardLogger(keras.callbacks.Callback):
    """Writes a run's TensorBoard events to `<run_dir>/tensorboard/`, at step = completed epochs: the
    epoch logs (`train/*`), `time/seconds_per_step` over `steps_per_epoch` steps (until `self.clock`'s
    epoch end when it is in the callback list, else until this callback's), `time/epoch_seconds`, the
    learning rates (`lr/*`), new metric lines (`metrics/<name>`) and the epoch's grid (`samples/grid`;
    place this callback after SampleGrid). Flushes every epoch, closes at train end."""

    def __init__(self, run_dir, steps_per_epoch):
        super().__init__()
        self.run_dir, self.steps = pathlib.Path(run_dir), max(1, int(steps_per_epoch))
        self.clock = EpochClock()
        self.metrics = MetricLines(run_dir)
        self.writer = self.started = None

    def on_train_begin(self, logs=None):
        if not AVAILABLE:
            warnings.warn(NOT_INSTALLED, TensorBoardUnavailableWarning, stacklevel=2)
            return
        self.writer, self.started = EventWriter(self.run_dir / FOLDER), None
        self.metrics.skip_existing()

    def on_epoch_begin(self, epoch, logs=None):
        if self.writer is None:
            return
        if self.started is None:
            self.writer.session_start(epoch + 1)
        self.started, self.clock.end = time.perf_counter(), None
        self.grid = self.run_dir / f"samples-{epoch + 1:06d}.png"
        self.grid_before = _stat(self.grid)

    def on_epoch_end(self, epoch, logs=None):
        if self.writer is None:
            return
        step, now = epoch + 1, time.perf_counter()
        scalars = {**train_scalars(logs), **learning_rates(self.model)}
        scalars["time/seconds_per_step"] = ((self.clock.end or now) - self.started) / self.steps
        scalars["time/epoch_seconds"] = now - self.started
        self.writer.scalars(step, scalars)
        for metric_step, tag, value in self.metrics.read(step):
            self.writer.scalars(metric_step, {tag: value})
        if _stat(self.grid) not in (None, self.grid_before):  # written this epoch
            self.writer.png(step, "samples/grid", self.grid.read_bytes())
        self.writer.flush()

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
