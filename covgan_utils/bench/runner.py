"""The parent of a `bench` run: probe the device, choose the plan, run one worker process per backend and
configuration (and one per backend for the matmul peaks and the batch sweep), merge their JSON into one
report with the device, date, commit and command, and write the report, docs/PERFORMANCE.md and the
README's step-time block.

The parent starts no Keras backend itself: on a GPU under JAX the first process to touch the device would
hold most of its memory.
"""
import datetime
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import tempfile

from covgan_utils.bench.document import render, replace_readme_block
from covgan_utils.bench.plan import BACKENDS, PEAK_DTYPES, default_plan, to_json, with_flags
from covgan_utils.util import files, paths


def installed(backend):
    """Whether the Keras backend's library can be imported here (without importing it)."""
    return importlib.util.find_spec(backend) is not None


def check_backends(backends):
    """Refuse a backend whose library is not installed, in one line."""
    for name in backends or ():
        if name in BACKENDS and not installed(name):
            extra = "tf" if name == "tensorflow" else "jax"
            raise ValueError(f"--backends {name}: {name} is not installed in this environment; drop it or install it (pip install -e .[{extra}])")


def spawn(backend, spec, workdir):
    """Run one worker under `backend` -> (result dict or None, the last line of its error output)."""
    name = f"{spec['kind']}-{backend}-{spec.get('preset', 'all')}-{spec.get('precision', 'all')}"
    spec = dict(spec, out=str(workdir / f"{name}.out.json"))
    spec_file = workdir / f"{name}.json"
    spec_file.write_text(json.dumps(spec))
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with open(workdir / f"{name}.err", "w+") as err:
        done = subprocess.run([sys.executable, "-m", "covgan_utils", "bench", "--worker", str(spec_file)], env=env, stderr=err, check=False)
        err.seek(0)
        lines = [line.strip() for line in err.read().splitlines() if line.strip()]
    if done.returncode != 0 or not pathlib.Path(spec["out"]).is_file():
        return None, f"exit status {done.returncode}" + (f": {lines[-1]}" if lines else "")
    return json.loads(pathlib.Path(spec["out"]).read_text()), ""


def probe(backends, workdir):
    """The device as the first installed backend sees it (JAX first: it is the GPU backend)."""
    order = [b for b in ("jax", "tensorflow") if b in (backends or BACKENDS) and installed(b)]
    if not order:
        raise ValueError(f"no Keras backend installed among {', '.join(backends or BACKENDS)}; install tensorflow or jax")
    result, error = spawn(order[0], {"kind": "probe"}, workdir)
    if result is None:
        raise RuntimeError(f"the device probe under {order[0]} failed: {error}")
    return result


def choose_plan(probed, presets=None, backends=None, precisions=None, steps=None, sweep_batches=None, quick_check=False):
    """The plan of the device (`gpu_plan` on a GPU), its backends cut to the installed ones, then the flags."""
    plan = default_plan(probed["gpu"], probed.get("fast_precision") == "mixed_bfloat16")
    if not backends:
        backends = tuple(b for b in plan.backends if installed(b))
    return with_flags(plan, presets, backends, precisions, steps, sweep_batches, quick_check)


def git_commit():
    """The checkout's commit ("<sha> + uncommitted changes" when the tree differs from it), or "unknown"."""
    def git(*args):
        return subprocess.run(["git", "-C", str(paths.PACKAGE_DIR.parent), *args], capture_output=True, text=True, timeout=30, check=True).stdout.strip()

    try:
        sha, dirty = git("rev-parse", "--short=12", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha} + uncommitted changes" if dirty else sha


def benchmark(presets=None, backends=None, precisions=None, steps=None, sweep_batches=None, quick_check=False,
              out="docs/performance.json", markdown=None, readme=None, command="python -m covgan_utils bench", say=print):
    """Measure the plan, write the JSON report to `out` (and `markdown`, and the README block of `readme`)
    -> the report dict."""
    with tempfile.TemporaryDirectory(prefix="covgan-bench-") as tmp:
        workdir = pathlib.Path(tmp)
        probed = probe(backends, workdir)
        plan = choose_plan(probed, presets, backends, precisions, steps, sweep_batches, quick_check)
        say(f"bench on {probed['hardware']}: {len(plan.jobs())} configurations on {', '.join(plan.backends)}"
            + (" (quick check)" if plan.quick_check else ""))
        rows, devices, failures = [], [], []
        for i, (backend, preset, precision, parts) in enumerate(plan.jobs(), 1):
            say(f"[{i}/{len(plan.jobs())}] {backend} {preset} {precision}" + (f" ({', '.join(parts)} only)" if parts else ""))
            spec = {"kind": "config", "preset": preset, "precision": precision, "steps": 1 if parts else plan.steps[backend],
                    "train_epochs": plan.train_epochs, "train_images": plan.train_images[backend], "parts": parts}
            result, error = spawn(backend, spec, workdir)
            if result:
                rows.append(result)
            else:
                failures.append({"job": f"{backend} {preset} {precision}", "error": error})
                say(f"{backend} {preset} {precision}: failed: {error}")
        for backend in plan.backends:
            say(f"[device] {backend}: matmul peak" + (", batch sweep" if backend in plan.sweep_backends else ""))
            precisions = {*plan.precisions, *plan.light.get(backend, ())}
            spec = {"kind": "device", "dtypes": sorted({PEAK_DTYPES[p] for p in precisions}), "matmul_size": plan.matmul_size,
                    "matmul_repeats": plan.matmul_repeats, "sweep_preset": plan.sweep_preset, "sweep_precision": "float32",
                    "sweep_batches": list(plan.sweep_batches) if backend in plan.sweep_backends else [], "sweep_steps": plan.sweep_steps}
            result, error = spawn(backend, spec, workdir)
            if result:
                devices.append(result)
            else:
                failures.append({"job": f"{backend} matmul peak and batch sweep", "error": error})
                say(f"{backend} matmul peak and batch sweep: failed: {error}")
    report = merge(probed, plan, rows, devices, failures, command)
    write(report, out, markdown, readme, say)
    return report


def merge(probed, plan, rows, devices, failures, command):
    """One report from the workers' results: ratios, GFLOP/s, share of the measured peak, speed-ups."""
    peaks = {(m["backend"], m["dtype"]): m["flops_per_s"] for d in devices for m in d["matmul"]}
    for r in rows:
        _derive(r, peaks.get((r["backend"], PEAK_DTYPES[r["precision"]])))
    failures = failures + [{"job": f"{d['backend']} {name}", "error": err} for d in devices for name, err in d.get("errors", {}).items()]
    datas = sorted({r["data"] for r in rows})
    return {
        "device": probed["hardware"], "devices": {d["backend"]: d["device"] for d in devices},
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": git_commit(), "command": command,
        "data": "; ".join(datas) or "n/a", "versions": {d["backend"]: d["versions"] for d in devices}, "plan": to_json(plan),
        "rows": rows, "speedups": speedups(rows), "matmul": [m for d in devices for m in d["matmul"]],
        "sweep": [s for d in devices for s in d["sweep"]], "failures": failures,
        "device_peak_memory": {d["backend"]: {"bytes": d.get("peak_memory_bytes"), "kind": d.get("memory_kind")} for d in devices},
    }


def _derive(row, peak):
    def over(a, b):
        return row.get(a) / row.get(b) if row.get(a) and row.get(b) else None

    step = (row.get("flops") or {}).get("step")
    for ratio, a, b in (("extras_off_over_textbook", "extras_off_ms", "textbook_ms"), ("in_training_over_project", "in_training_ms", "project_ms")):
        if row.get(ratio) is None:  # paired in the worker when both sides ran there (the median of paired rounds)
            row[ratio] = over(a, b)
    row["gflops_per_s"] = step / (row["project_ms"] / 1000) if step and row.get("project_ms") else None
    row["gflops_per_s_extras_off"] = step / (row["extras_off_ms"] / 1000) if step and row.get("extras_off_ms") else None
    row["peak_flops_per_s"] = peak
    row["peak_share"] = row["gflops_per_s"] / peak if row["gflops_per_s"] and peak else None
    row["peak_share_extras_off"] = row["gflops_per_s_extras_off"] / peak if row["gflops_per_s_extras_off"] and peak else None


MEASURES = {"project": "project_ms", "extras_off": "extras_off_ms", "textbook": "textbook_ms", "in_training": "in_training_ms", "torch": "torch_ms"}


def speedups(rows):
    """[{preset, backend, precision, <measure>: float32 ms / mixed ms}] for every mixed-precision row with a float32 twin."""
    base = {(r["preset"], r["backend"]): r for r in rows if r["precision"] == "float32"}
    out = []
    for r in rows:
        f32 = base.get((r["preset"], r["backend"]))
        if r["precision"] == "float32" or f32 is None:
            continue
        out.append({"preset": r["preset"], "backend": r["backend"], "precision": r["precision"],
                    **{k: f32[v] / r[v] if f32.get(v) and r.get(v) else None for k, v in MEASURES.items()}})
    return out


def write(report, out, markdown=None, readme=None, say=print):
    """Write the JSON report, and from it docs/PERFORMANCE.md and the README's block, atomically."""
    if out:
        files.write_text_atomic(out, json.dumps(report, indent=1) + "\n")
        say(f"wrote {out}")
    if markdown:
        files.write_text_atomic(markdown, render(report))
        say(f"wrote {markdown}")
    if readme:
        files.write_text_atomic(readme, replace_readme_block(pathlib.Path(readme).read_text(), report))
        say(f"updated the step-time block of {readme}")
