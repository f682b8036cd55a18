"""docs/PERFORMANCE.md from the benchmark's JSON alone (`render`), and the README's step-time block (`readme_block`).

Nothing here measures or imports a Keras backend: a report renders the same on any machine.
"""
import re

RATIO_TARGET = 1.05  # project step with the extras off / textbook step: the same work at the same speed
TRAINING_TARGET = 1.10  # in-training step / project step: what the loop adds around the compiled step
README_START = "<!-- bench:step-times (written by `python -m covgan_utils bench --readme README.md`; do not edit) -->"
README_END = "<!-- /bench:step-times -->"


# ---------------------------------------------------------------- numbers as printed

def ms(value):
    """Milliseconds: whole above 100, one decimal above 10, else two; "n/a" for None."""
    if value is None:
        return "n/a"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def ratio(value, target=None):
    """"1.02", or with a target "1.02 (pass)" / "1.12 (**fail**)"; "n/a" for None."""
    if value is None:
        return "n/a"
    if target is None:
        return f"{value:.2f}"
    return f"{value:.2f} (pass)" if value <= target else f"{value:.2f} (**fail**)"


def speedup(value):
    return "n/a" if value is None else f"{value:.2f}x"


def gflop(value):
    return "n/a" if value is None else f"{value / 1e9:.2f}"


def gflops(value):
    return "n/a" if value is None else f"{value / 1e9:.1f}"


def share(value):
    return "n/a" if value is None else f"{100 * value:.1f}%"


def mib(value):
    return "n/a" if value is None else f"{value / 2**20:.0f}"


def table(header, rows):
    """A markdown pipe table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


# ---------------------------------------------------------------- the document

def render(report):
    """docs/PERFORMANCE.md as text, from the benchmark's JSON dict."""
    parts = [_header(report), _step_section(report), _speedup_section(report), _peak_section(report),
             _sweep_section(report), _steps_section(report), _failures_section(report)]
    return "\n\n".join(p for p in parts if p) + "\n"


def _header(report):
    plan = report.get("plan", {})
    check = ("\n\n**Quick check**: every measurement ran with 1 step and a 2-epoch training, to test the pipeline; "
             "these numbers are not timings.") if plan.get("quick_check") else ""
    return f"""# Performance

Written by `python -m covgan_utils bench` from its JSON report; do not edit by hand (rerun the command below).

- device: {report['device']}
- date: {report['date']}
- commit: {report['commit']}
- data: {report['data']}
- software: {_versions(report)}

```bash
{report['command']}
```{check}"""


def _versions(report):
    return "; ".join(f"{b}: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) for b, versions in report.get("versions", {}).items()) or "n/a"


def _step_section(report):
    rows = []
    for r in report["rows"]:
        torch = ms(r.get("torch_ms")) if r.get("torch_ms") is not None else (r.get("torch_note") or "n/a")
        rows.append([f"`{r['preset']}`", r["backend"], r["precision"], r["batch"], ms(r.get("project_ms")), ms(r.get("extras_off_ms")),
                     ms(r.get("textbook_ms")), ratio(r.get("extras_off_over_textbook"), RATIO_TARGET), torch, ms(r.get("in_training_ms")),
                     ratio(r.get("in_training_over_project"), TRAINING_TARGET), gflop((r.get("flops") or {}).get("step")),
                     gflops(r.get("gflops_per_s")), share(r.get("peak_share")), mib(r.get("peak_memory_bytes"))])
    header = ["preset", "backend", "precision", "batch", "project step, ms", "extras off, ms", "textbook, ms",
              f"extras off / textbook (target <= {RATIO_TARGET:.2f})", "PyTorch, ms", "in training, ms",
              f"in training / project (target <= {TRAINING_TARGET:.2f})", "GFLOP per step", "GFLOP/s (project)",
              "% of matmul peak", "peak memory, MiB"]
    memory = sorted({r.get("memory_kind") for r in report["rows"] if r.get("memory_kind")})
    light = [r for r in report["rows"] if r.get("parts") and "project" not in r["parts"]]
    light_note = ("\n- Rows with only the extras-off time are light jobs: a precision this device has no units for "
                  "(`covgan_utils.bench.plan.cpu_plan`), timed by one step for the speed-up table.") if light else ""
    return f"""## Training step

One row per preset, Keras backend and precision; every time is milliseconds per training step on the
preset's batch, on the same fixed batch of training images (the in-training step excepted). Each
configuration ran in its own process.

- **project step**: the project's compiled step (`covgan_utils.training.steps`, made by `GAN.stepper`) with
  the preset's recipe: augmentation, adaptive augmentation, lazy R1 in its share of steps, EMA. One warm-up
  call per step variant compiles it, then the timed calls; the last log is read back to wait for the device.
- **extras off**: the same step with augmentation, ADA, R1 and EMA off, the non-saturating loss and one
  generator update: the work of the textbook step.
- **textbook**: a GAN step written as the Keras examples write one (`covgan_utils.bench.textbook`:
  `tf.GradientTape` under TensorFlow, `stateless_call` + `jax.value_and_grad` under JAX) on the same generator
  and discriminator, plain Adam. **extras off / textbook** is the project's overhead on the same work; the
  target is {RATIO_TARGET:.2f} or less, marked pass or **fail**. The two are timed in paired rounds, one
  after the other (the order alternating), and the ratio is the median of the rounds' ratios: a slow
  phase of a shared machine slows both sides of a pair, not one row.
- **PyTorch**: the same shapes and channels in torch modules built from the Keras layers
  (`covgan_utils.bench.torch_loop`), a textbook BCE loop, as many threads as the Keras step's cores; "n/a
  (<layer>)" when a layer has no mapping.
- **in training**: a short real training (`loop.train`, the preset's recipe, no metrics, guard or extra
  samples); the median of the epochs after the first (which compiles), divided by the steps per epoch. Its
  ratio to the project step is what the loop adds (data batches, callbacks, logs); the target is
  {TRAINING_TARGET:.2f} or less. The ratio pairs each epoch with the bare step timed right after it for as
  many steps (outside the epoch's timed span), and is the median of the per-epoch ratios.
- **GFLOP per step**: counted from the layers (`covgan_utils.bench.flops`: convolutions and dense layers,
  backward = 2x forward; R1 and augmentation not counted, so for the project step the GFLOP/s is a lower
  bound). **% of matmul peak**: GFLOP/s of the project step over the measured matmul peak of the same
  backend in the same dtype (float32, or bfloat16 for mixed_bfloat16; table below).
- **peak memory**: {', '.join(memory) or 'n/a'}, read right after the project step's measurement.{light_note}

{table(header, rows)}"""


def _speedup_section(report):
    rows = [[f"`{s['preset']}`", s["backend"], s["precision"], *[speedup(s.get(k)) for k in ("project", "extras_off", "textbook", "in_training", "torch")]]
            for s in report.get("speedups", [])]
    if not rows:
        return ""
    return f"""## Mixed precision speed-up

The float32 time divided by the mixed-precision time of the same preset and backend (above 1: the mixed
precision is faster).

{table(["preset", "backend", "precision", "project step", "extras off", "textbook", "in training", "PyTorch"], rows)}"""


def _peak_section(report):
    rows = [[m["backend"], m["dtype"], f"{m['size']}x{m['size']}", f"{m['ms']:.2f}", gflops(m["flops_per_s"])] for m in report.get("matmul", [])]
    if not rows:
        return ""
    return f"""## Measured matmul peak

The best of several runs of a square `keras.ops.matmul` (2 * n^3 FLOPs) on each backend and dtype: the
device's attainable rate for dense work, the denominator of "% of matmul peak" above.

{table(["backend", "dtype", "size", "ms per product", "GFLOP/s"], rows)}"""


def _sweep_section(report):
    sweep = report.get("sweep", [])
    if not sweep:
        return ""
    base = {(s["backend"], s["preset"]): s["images_per_s"] for s in sorted(sweep, key=lambda s: s["batch"], reverse=True)}
    rows = [[s["backend"], f"`{s['preset']}`", s["precision"], s["batch"], ms(s["ms"]), f"{s['images_per_s']:.0f}",
             f"{s['images_per_s'] / base[(s['backend'], s['preset'])]:.2f}"] for s in sweep]
    return f"""## Batch sweep

The project step of one preset at each batch size. Images per second stop growing with the batch where the
device is saturated; the last column is images/s relative to the smallest batch.

{table(["backend", "preset", "precision", "batch", "ms per step", "images/s", "relative to the smallest batch"], rows)}"""


def _steps_section(report):
    rows = []
    for r in report["rows"]:
        s = r.get("steps", {})
        rows.append([f"`{r['preset']}`", r["backend"], r["precision"], s.get("project", "n/a"), s.get("extras_off", "n/a"), s.get("textbook", "n/a"),
                     s.get("torch") or "n/a", f"{s.get('in_training_epochs', 'n/a')} x {s.get('in_training_steps_per_epoch', 'n/a')}"])
    return f"""## Timed steps per measurement

Timed calls after the warm-up; in training: epochs x steps per epoch (the first epoch is left out of the median).

{table(["preset", "backend", "precision", "project", "extras off", "textbook", "PyTorch", "in training"], rows)}"""


def _failures_section(report):
    lines = [f"- {f['job']}: {f['error']}" for f in report.get("failures", [])]
    lines += [f"- {r['backend']} {r['preset']} {r['precision']}, {name}: {err}" for r in report["rows"] for name, err in (r.get("errors") or {}).items()]
    return "## Failures\n\n" + "\n".join(lines) if lines else ""


# ---------------------------------------------------------------- the README's block

def readme_block(report=None):
    """The README's step-time block (between README_START and README_END) for a report, or the line saying
    how to write it when there is none yet."""
    if report is None:
        body = "Step times: not measured yet; the benchmark run (section Benchmark) writes them here from docs/performance.json."
    else:
        rows = []
        for r in report["rows"]:
            rows.append([f"`{r['preset']}`", r["batch"], r["backend"], r["precision"], ms(r.get("project_ms")), ms(r.get("in_training_ms"))])
        body = (f"Step times from docs/performance.json ({report['device']}, {report['date']}, commit {report['commit']}; every table and "
                f"how it was measured: docs/PERFORMANCE.md):\n\n"
                + table(["preset", "batch", "backend", "precision", "ms per compiled step", "ms per step in training"], rows))
    return f"{README_START}\n{body}\n{README_END}"


def replace_readme_block(text, report):
    """`text` (the README) with its step-time block replaced by `readme_block(report)`."""
    pattern = re.compile(re.escape(README_START) + r".*?" + re.escape(README_END), flags=re.DOTALL)
    if len(pattern.findall(text)) != 1:
        raise ValueError(f"the README holds {len(pattern.findall(text))} step-time blocks, expected one between {README_START!r} and {README_END!r}")
    return pattern.sub(lambda _: readme_block(report), text)
