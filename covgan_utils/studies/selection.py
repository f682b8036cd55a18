"""A two-stage model selection that fits one GPU call, with its rule fixed before any run.

Stage 1 trains every candidate at once, each in its own process on the one device, for the same wall
time, with the divergence guard watching only (`guard_watch`: every trip is recorded in guard.jsonl, no
run is rolled back, slowed or stopped). Each candidate is then scored on the machine on domain features
(the Inception weights do not travel) and `pick_leader` applies RULE. Stage 2 resumes the leader's run
folder alone, on every visible device, for the rest of the call; `continue_leader` gives it more minutes
in a second call made at once on the same machine.

What comes back (`gpu_job.check_outputs`: at most 8 files under 16 MiB, MAX_TOTAL_BYTES in all):
selection.json (the rule, every candidate's numbers, the leader), job.json (device, minutes per stage,
images seen, precision), the leader's float16 generator as `runs.export_release` writes it, and
selection.tar.gz.part-NN (`cat selection.tar.gz.part-* | tar -xz`): per candidate its logs, its samples
as uint8 .npz and, while they fit, its float16 generator. `score_returned` scores those samples here
on Inception features. `cpu_screen` runs the same rule on CPU-size candidates (the `selection-cpu`
ablation study).
"""
import gzip
import io
import json
import math
import multiprocessing
import os
import pathlib
import tarfile
import time

import numpy as np

from covgan_utils import config as config_lib
from covgan_utils import runs as runs_lib
from covgan_utils import sampling
from covgan_utils.data import decoding, sources
from covgan_utils.metrics import report as report_lib
from covgan_utils.studies import ablation, gpu_job
from covgan_utils.training import distribute, loop
from covgan_utils.util import files, hardware, paths


def _with_rpgan(rows, name, preset):
    """`rows` with a `name` row (preset + the RpGAN loss) after `preset`'s row, when this version has the loss."""
    if "rpgan" not in config_lib.LOSSES:
        return rows
    out = {}
    for row, value in rows.items():
        out[row] = value
        if row == preset:
            out[name] = (preset, {"loss": "rpgan"})
    return out


CANDIDATES = _with_rpgan({  # name -> (preset, changes): the GPU-size candidates
    "gpu": ("gpu", {}),  # the release recipe: the lean family at 4x width
    "r3gan-gpu": ("r3gan-gpu", {}),
    "style-ada-gpu": ("style-ada-gpu", {}),
}, "gpu rpgan", "gpu")


# Candidates the CPU screen (`cpu_screen`, docs/RESULTS.md) dropped from the default plan: name -> why. Still selectable
# with --candidates.
SCREENED_OUT = {"r3gan-gpu": "drew no lungs in the CPU screen (34 epochs in 10 minutes: blurred blobs) while the other families did"}
DEFAULT_CANDIDATES = [name for name in CANDIDATES if name not in SCREENED_OUT]


SMOKE_CANDIDATES = {  # seconds-long stand-ins: the whole plan on a CPU (tests, rehearsals)
    name: (name, {}) for name in ("smoke", "smoke-style", "smoke-fastgan", "smoke-r3gan") if name in config_lib.PRESETS
}


KNOWN = {**CANDIDATES, **SMOKE_CANDIDATES}


WATCH = {"guard": True, "guard_watch": True}  # the guard records, never stops: every candidate keeps its budget


BLANK_LIMIT = 0.05  # more blank samples than this excludes a candidate
COLLAPSE_MARGIN = 0.05  # sample MS-SSIM above the real data's by more than this: collapsed, excluded
TIE_STDS = 2.0  # KID means within this many standard deviations tie


RULE = (
    "Leader rule, fixed before any run. 1. A candidate is excluded when it left no checkpoint, when its domain KID is "
    f"not finite, when more than {BLANK_LIMIT:.0%} of its samples are blank, or when it collapsed: the MS-SSIM of its "
    f"samples exceeds the real data's by more than {COLLAPSE_MARGIN}. 2. Among the rest, the lowest domain KID mean "
    f"leads, and every candidate whose KID mean is within {TIE_STDS:g} standard deviations of it (the larger of the "
    "two KID stds) ties with it. 3. Among the tied, the one whose sample MS-SSIM is closest to the real data's wins "
    "(then the lower KID, then the name). 4. When every candidate is excluded, the lowest finite KID leads, marked fallback."
)


MAX_TOTAL_BYTES = 64 * 2**20  # all files of one call together


PIECE_BYTES = 15 * 2**20  # tar pieces, as `tools/gpu_run.sh ablation` cuts them


TAR = "selection.tar.gz"


RELEASE_FILES = ("generator.npz", "config.json", "source.json")


DEFAULT_ROOT = paths.MODELS_DIR / "ablation-selection"  # git-ignored: it stays on the GPU machine between calls


# ---------------------------------------------------------------- the rule


def exclusion(numbers):
    """Why the rule excludes a candidate with these stage-1 `numbers`, or None."""
    if not numbers.get("trained"):
        return "no checkpoint"
    if not math.isfinite(numbers.get("kid", math.nan)):
        return "KID not finite"
    if numbers["blank_fraction"] > BLANK_LIMIT:
        return f"blank samples ({numbers['blank_fraction']:.1%} > {BLANK_LIMIT:.0%})"
    if numbers["ms_ssim"] > numbers["real_ms_ssim"] + COLLAPSE_MARGIN:
        return f"collapse (sample MS-SSIM {numbers['ms_ssim']:.3f}, real {numbers['real_ms_ssim']:.3f})"
    return None


def pick_leader(candidates):
    """Apply RULE to {name: {trained, kid, kid_std, ms_ssim, real_ms_ssim, blank_fraction}} ->
    {"leader", "tied", "excluded": {name: reason}, "fallback"}."""
    if not candidates:
        raise ValueError("no candidates to choose from; pass at least one")
    excluded = {name: why for name, numbers in candidates.items() if (why := exclusion(numbers))}
    kept = {name: n for name, n in candidates.items() if name not in excluded}
    if not kept:
        finite = {name: n for name, n in candidates.items() if n.get("trained") and math.isfinite(n.get("kid", math.nan))}
        if not finite:
            raise ValueError(f"no candidate finished stage 1 with a finite KID ({'; '.join(f'{k}: {v}' for k, v in excluded.items())})")
        leader = min(sorted(finite), key=lambda name: finite[name]["kid"])
        return {"leader": leader, "tied": [leader], "excluded": excluded, "fallback": True}
    best = min(sorted(kept), key=lambda name: kept[name]["kid"])
    tied = sorted(name for name, n in kept.items() if n["kid"] - kept[best]["kid"] <= TIE_STDS * max(n["kid_std"], kept[best]["kid_std"]))
    leader = min(tied, key=lambda name: (abs(kept[name]["ms_ssim"] - kept[name]["real_ms_ssim"]), kept[name]["kid"], name))
    return {"leader": leader, "tied": tied, "excluded": excluded, "fallback": False}


# ---------------------------------------------------------------- stage 1: every candidate at once


def check_candidates(names, candidates=None):
    """{name: (preset, changes)} of `names`, each a buildable config, checked before any training."""
    candidates = KNOWN if candidates is None else candidates
    names = list(names)
    if not names:
        raise ValueError("no candidates; pass at least one name")
    unknown = [n for n in names if n not in candidates]
    if unknown:
        raise ValueError(f"unknown candidate(s) {', '.join(unknown)}; choose from {', '.join(candidates)}")
    if len(set(map(ablation.slug, names))) < len(names):
        raise ValueError(f"candidates {', '.join(names)} name the same run folder twice; pass each once")
    for name in names:
        preset, changes = candidates[name]
        if preset not in config_lib.PRESETS:
            usable = ", ".join(n for n in candidates if candidates[n][0] in config_lib.PRESETS)
            raise ValueError(f"candidate {name!r} needs preset {preset!r}, which this version lacks; choose from {usable}")
        candidate_config(name, candidates[name], 1.0)
    return {name: candidates[name] for name in names}


def candidate_config(name, row, minutes, seed=0):
    """Config of one candidate for `minutes` of wall time: its preset + changes, the guard watching, domain metrics,
    the machine's fast precision (`hardware.fast_precision`: bfloat16 on an H100 / H200 and on CPUs with bfloat16 units)."""
    preset, changes = row
    return config_lib.get_preset(preset, **{"precision": "auto", **changes}).replace(
        **WATCH, preset=f"select-{ablation.slug(name)}", seed=seed, epochs=1_000_000, time_budget_minutes=float(minutes),
        metrics_features="domain", keep_checkpoints=2,
    )


def train_candidate(name, row, run_dir, data_file, minutes, seed=0, log_file=None):
    """Train one candidate (the body of a stage-1 process; its output goes to `log_file`) and write done.json."""
    if log_file is not None:
        log = open(log_file, "a")
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    started = time.time()
    loop.train(candidate_config(name, row, minutes, seed), run_dir, data_dir=data_file, verbose=False)
    rows = files.read_jsonl(pathlib.Path(run_dir) / "stats.jsonl")
    done = {"row": name, "seed": seed, "minutes": minutes, "wall_seconds": round(time.time() - started, 1), "epochs": len(rows),
            "hardware": hardware.hardware(), "pid": os.getpid()}
    files.write_text_atomic(pathlib.Path(run_dir) / "done.json", json.dumps(done) + "\n")


def stage1(data_file, root, candidates, minutes, seed=0):
    """Every candidate at once, each its own process on this machine's device(s), for `minutes` of
    training each -> {name: run folder}; a failed candidate keeps its log (<root>/<slug>.log) and is
    excluded by the rule."""
    root = pathlib.Path(root)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # the processes share one GPU (inherited by each)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no backend state is shared
    procs = {}
    for name, row in candidates.items():
        run_dir = root / ablation.slug(name)
        args = (name, row, str(run_dir), str(data_file), minutes, seed, str(root / f"{ablation.slug(name)}.log"))
        procs[name] = (context.Process(target=train_candidate, args=args, name=f"select-{ablation.slug(name)}"), run_dir)
        procs[name][0].start()
    for name, (proc, run_dir) in procs.items():
        proc.join()
        if proc.exitcode:
            tail = (root / f"{ablation.slug(name)}.log").read_text(errors="replace").strip().splitlines()[-3:]
            print(f"select: candidate {name} failed (exit {proc.exitcode}): {' | '.join(tail)}")
    return {name: run_dir for name, (_, run_dir) in procs.items()}


def real_sets(data_file, val=None, train=None):
    """(val, train) images [N, 128, 128, 1]: the given arrays, or the COVID scans of the shared patient-level split."""
    if val is None:
        train_ds, val_ds = report_lib.real_split(data_file)
        val, train = val_ds.images, train_ds.images
    return val, train


def save_samples(images, file, seeds):
    """Samples [N, 128, 128, 1] in [-1, 1] -> uint8 .npz (`images`, `seeds`)."""
    file = pathlib.Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(file, lambda fh: np.savez_compressed(fh, images=decoding.to_uint8(images), seeds=np.asarray(seeds, np.int64)))
    return file


def load_samples(file):
    """A `save_samples` file -> images float32 [N, 128, 128, 1] in [-1, 1]."""
    with np.load(file, allow_pickle=False) as z:
        return z["images"].astype(np.float32) / 127.5 - 1.0  # [N, 128, 128, 1]


def score_run(run_dir, n_samples, val, samples_file):
    """Sample seeds 0..n-1 of a run's newest generator, save them (`samples_file`), score them on domain
    features against `val` (eval.json in the run) -> the numbers the rule reads, with the run's log numbers."""
    run_dir = pathlib.Path(run_dir)
    numbers = run_numbers(run_dir)
    if not numbers["trained"]:
        return numbers
    images = sampling.generate(runs_lib.load_generator(run_dir), range(n_samples))  # [n, 128, 128, 1]
    save_samples(images, samples_file, range(n_samples))
    try:
        report = report_lib.evaluate_images(images, val, n=n_samples, features="domain", baselines=False)
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as err:  # a diverged run: excluded, the others go on
        return {**numbers, "kid": math.nan, "score_error": str(err)}
    report_lib.write_report(report, run_dir / ablation.report_name("domain"))
    g = report["generated"]
    return {
        **numbers, "n": g["n_generated"], "n_real": g["n_real"], "kid": g["kid"]["mean"], "kid_std": g["kid"]["std"], "fid": g["fid"]["value"],
        "ms_ssim": g["ms_ssim"], "real_ms_ssim": report["real_ms_ssim"], "blank_fraction": g["blank_fraction"],
        "duplicate_fraction": g["duplicate_fraction"], "precision_domain": g["prdc"]["precision"], "recall_domain": g["prdc"]["recall"],
    }


def run_numbers(run_dir):
    """{trained, epochs, images_seen, wall_seconds, guard_trips, precision} from a run folder's files."""
    run_dir = pathlib.Path(run_dir)
    trained = run_dir.is_dir() and bool(list(run_dir.glob("checkpoint-[0-9]*.npz")))
    stats = files.read_jsonl(run_dir / "stats.jsonl") if (run_dir / "stats.jsonl").is_file() else []
    done = files.read_json(run_dir / "done.json", "rerun `select run`") if (run_dir / "done.json").is_file() else {}
    guard = files.read_jsonl(run_dir / "guard.jsonl") if (run_dir / "guard.jsonl").is_file() else []
    precision = config_lib.Config.load(run_dir).precision if (run_dir / "config.json").is_file() else None
    return {
        "trained": trained, "epochs": stats[-1]["epoch"] if stats else 0, "images_seen": stats[-1].get("images_seen", 0) if stats else 0,
        "wall_seconds": done.get("wall_seconds"), "guard_trips": len(guard), "guard_reasons": sorted({g["reason"].split(" (")[0] for g in guard}),
        "precision": precision,
    }


# ---------------------------------------------------------------- stage 2 and the continuation


def usable_devices(batch_size):
    """The most visible devices (`distribute.device_count`) that split `batch_size` evenly."""
    n = distribute.device_count()
    return max(d for d in range(1, n + 1) if batch_size % d == 0)


def resume(run_dir, minutes, data_file):
    """Continue a run folder from its newest checkpoint for `minutes`, on every usable device -> (epochs before, after)."""
    run_dir = pathlib.Path(run_dir)
    before = run_numbers(run_dir)["epochs"]
    saved = config_lib.Config.load(run_dir)
    requested = saved.replace(time_budget_minutes=float(minutes), devices=usable_devices(saved.batch_size))
    loop.train(requested, run_dir, data_dir=data_file, resume=True, verbose=False)
    return before, run_numbers(run_dir)["epochs"]


def run_selection(data_file, out_dir, minutes, stage1_minutes=None, names=None, n_samples=500, root=None, candidates=None,
                  reserve_minutes=1.0, stage2_minutes=None, val=None):
    """The whole call: stage 1 (every candidate at once), the rule on domain features, stage 2 (the leader
    alone for what is left of `minutes` after `reserve_minutes` for the outputs, at most `stage2_minutes`),
    the outputs -> `out_dir`."""
    started = time.time()
    chosen, stage1_minutes = check_plan(names, minutes, stage1_minutes, n_samples, candidates)
    data_file = sources.find_data_dir(data_file)
    root, out_dir = gpu_job.empty_folder(root or DEFAULT_ROOT, "--root"), gpu_job.empty_folder(out_dir, "--out")
    val, _ = real_sets(data_file, val)
    state = {"rule": RULE, "constants": {"blank_limit": BLANK_LIMIT, "collapse_margin": COLLAPSE_MARGIN, "tie_stds": TIE_STDS},
             "features": "domain", "n_samples": n_samples, "root": str(root.resolve()), "data": str(data_file), "candidates": {}, "stages": []}
    t1 = time.time()
    run_dirs = stage1(data_file, root, chosen, stage1_minutes)
    for name, run_dir in run_dirs.items():
        numbers = score_run(run_dir, n_samples, val, _staging(root) / "samples" / f"{ablation.slug(name)}.npz")
        state["candidates"][name] = {"preset": chosen[name][0], "changes": chosen[name][1], "run_dir": str(run_dir.resolve()), **numbers}
    try:
        state.update(pick_leader(state["candidates"]))
    except ValueError as err:  # nothing to continue: the logs come back, then the one-line error
        state.update(leader=None, error=str(err))
        _save_state(root, state)
        gpu_job.write_json(state, out_dir / "selection.json")
        gpu_job.write_json(describe(state, started), out_dir / "job.json")
        pack(root, out_dir, state, list(state["candidates"]))
        raise
    for name, c in state["candidates"].items():
        c["excluded"] = state["excluded"].get(name)
    last = {n: c["epochs"] for n, c in state["candidates"].items()}
    state["stages"].append({"name": "stage 1", "planned_minutes": stage1_minutes, "wall_minutes": _minutes(t1), "last_epoch": last})
    _save_state(root, state)
    left = minutes - _minutes(started) - reserve_minutes
    left = left if stage2_minutes is None else min(left, stage2_minutes)
    _leader_stage(state, root, "stage 2", left, data_file, val)
    return finish(root, out_dir, state, started)


def check_plan(names, minutes, stage1_minutes=None, n_samples=500, candidates=None):
    """Refuse a plan that cannot run before anything is made -> ({name: (preset, changes)}, stage-1 minutes:
    by default 45% of the call's `minutes`)."""
    if not minutes > 0:
        raise ValueError(f"minutes must be positive, got {minutes}")
    stage1_minutes = round(0.45 * minutes, 3) if stage1_minutes is None else stage1_minutes
    if not 0 < stage1_minutes < minutes:
        raise ValueError(f"stage-1 minutes must be in (0, {minutes}), the minutes of the whole call, got {stage1_minutes}; "
                         "pass fewer --stage1-minutes")
    if n_samples < 8:
        raise ValueError(f"n_samples must be at least 8 (KID needs them), got {n_samples}")
    return check_candidates(list(DEFAULT_CANDIDATES) if names is None else names, candidates), stage1_minutes


def _leader_stage(state, root, name, minutes, data_file, val):
    """Resume the leader for `minutes` (skipped, and so recorded, when none are left), score its newest generator."""
    leader = state["leader"]
    run_dir = pathlib.Path(state["candidates"][leader]["run_dir"])
    t = time.time()
    if minutes <= 0:
        state["stages"].append({"name": name, "planned_minutes": round(minutes, 3), "wall_minutes": 0.0, "skipped": "no minutes left in the call"})
        return _save_state(root, state)
    before, after = resume(run_dir, minutes, data_file)
    final = score_run(run_dir, state["n_samples"], val, _staging(root) / "samples" / f"{ablation.slug(leader)}-final.npz")
    state["stages"].append({"name": name, "planned_minutes": round(minutes, 3), "wall_minutes": _minutes(t), "first_epoch": before + 1, "last_epoch": after,
                            "devices": usable_devices(config_lib.Config.load(run_dir).batch_size), "leader_after": final})
    return _save_state(root, state)


def continue_leader(out_dir, minutes, root=None, data_file=None, reserve_minutes=0.5, val=None):
    """A second call on the same machine: resume the leader of the selection under `root` for what is left
    of `minutes`, then the leader's outputs -> `out_dir`."""
    started = time.time()
    root = pathlib.Path(root or DEFAULT_ROOT)
    state_file = root / "selection.json"
    gone = "the machine that ran `select run` was released (or --root is wrong); start again with `select run`"
    if not state_file.is_file():
        raise FileNotFoundError(f"no selection under {root} (no selection.json): {gone}")
    state = files.read_json(state_file, "start again with `select run`")
    run_dir = pathlib.Path(state["candidates"][state["leader"]]["run_dir"])
    if not run_dir.is_dir() or not list(run_dir.glob("checkpoint-[0-9]*.npz")):
        raise FileNotFoundError(f"the leader's run folder {run_dir} is gone: {gone}")
    data_file = sources.find_data_dir(data_file or state["data"])
    out_dir = gpu_job.empty_folder(out_dir, "--out")
    val, _ = real_sets(data_file, val)
    count = sum(s["name"].startswith("continue") for s in state["stages"]) + 1
    _leader_stage(state, root, f"continue {count}", minutes - _minutes(started) - reserve_minutes, data_file, val)
    return finish(root, out_dir, state, started, only_leader=True)


# ---------------------------------------------------------------- what comes back


def finish(root, out_dir, state, started, only_leader=False):
    """Write the outputs of one call into `out_dir` (leader release, selection.json, job.json, the tar pieces) -> `out_dir`."""
    leader = state["leader"]
    leader_dir = pathlib.Path(state["candidates"][leader]["run_dir"])
    runs_lib.export_release(leader_dir, release_dir=out_dir)
    names = [leader] if only_leader else [leader] + [n for n in state["candidates"] if n != leader]
    job = describe(state, started)
    gpu_job.write_json(state, out_dir / "selection.json")
    gpu_job.write_json(job, out_dir / "job.json")
    job["packed"], job["left_behind"] = pack(root, out_dir, state, names)
    gpu_job.write_json(job, out_dir / "job.json")
    return check_outputs(out_dir)


def describe(state, started):
    """job.json: device, minutes per stage, images seen and precision per candidate, wall minutes of the call."""
    return {
        **hardware.device_info(), "hardware": hardware.hardware(), "leader": state.get("leader"),
        "stages": [{k: v for k, v in s.items() if k != "leader_after"} for s in state["stages"]],
        "images_seen": {n: run_numbers(c["run_dir"])["images_seen"] for n, c in state["candidates"].items() if pathlib.Path(c["run_dir"]).is_dir()},
        "precision": {n: c["precision"] for n, c in state["candidates"].items()},
        "call_wall_minutes": _minutes(started),
    }


LOG_PATTERNS = ("config.json", "done.json", "stats.jsonl", "guard.jsonl", "metric-*.jsonl", "best.json", "eval.json")


def pack(root, out_dir, state, names):
    """selection.tar.gz.part-NN in `out_dir`: logs of `names`, then their samples, then the other candidates'
    float16 generators, each part whole while the file limits hold -> (packed, left behind) lists of tar paths."""
    parts = sorted(_parts(root, state, names), key=lambda part: part[0])  # [(priority, [(path in the tar, file)])]
    budget, used, packed, left = _tar_budget(out_dir), 0, [], []
    for _, members in parts:
        size = sum(file.stat().st_size + 1024 for _, file in members)  # + a tar header each
        fits = used + size <= budget
        used += size if fits else 0
        (packed if fits else left).extend(members)
    with _Pieces(out_dir / TAR) as pieces, gzip.GzipFile(fileobj=pieces, mode="wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        for arcname, file in packed:
            tar.add(file, arcname=arcname)
    return [a for a, _ in packed], [a for a, _ in left]


def _parts(root, state, names):
    """What may go into the tar, by priority: 0 the logs and last grid of each run, 1 its samples, 2 the float16
    generator of each candidate but the leader (whose generator comes back beside the tar)."""
    staging = _staging(root)
    for name in names:
        run_dir, slug = pathlib.Path(state["candidates"][name]["run_dir"]), ablation.slug(name)
        logs = [f for pattern in LOG_PATTERNS for f in sorted(run_dir.glob(pattern))] + sorted(run_dir.glob("samples-[0-9]*.png"))[-1:]
        process_log = [(f"runs/{slug}.log", root / f"{slug}.log")] if (root / f"{slug}.log").is_file() else []  # the stage-1 process
        yield 0, [(f"runs/{slug}/{f.name}", f) for f in logs] + process_log
        for end in ("", "-final"):
            if (staging / "samples" / f"{slug}{end}.npz").is_file():
                yield 1, [(f"samples/{slug}{end}.npz", staging / "samples" / f"{slug}{end}.npz")]
        if name != state["leader"] and run_numbers(run_dir)["trained"]:
            release = staging / "generators" / slug
            runs_lib.export_release(run_dir, release_dir=release)
            yield 2, [(f"generators/{slug}/{f}", release / f) for f in RELEASE_FILES]


def _tar_budget(out_dir):
    """Bytes the tar may take: the pieces left of MAX_FILES, and MAX_TOTAL_BYTES less the files there, with a margin."""
    present = [p for p in out_dir.iterdir() if p.is_file()]
    pieces = gpu_job.MAX_FILES - len(present)
    return max(0, min(pieces * PIECE_BYTES, MAX_TOTAL_BYTES - sum(p.stat().st_size for p in present)) - 2**20)


class _Pieces(io.RawIOBase):
    """A write-only stream cut into `<base>.part-00`, `-01`, ... of PIECE_BYTES each."""

    def __init__(self, base):
        super().__init__()
        self.base, self.index, self.fh, self.left = pathlib.Path(base), -1, None, 0

    def writable(self):
        return True

    def write(self, data):
        view, done = memoryview(data), 0
        while done < len(view):
            if self.left == 0:
                self._next()
            part = view[done : done + self.left]
            self.fh.write(part)
            done += len(part)
            self.left -= len(part)
        return done

    def _next(self):
        if self.fh is not None:
            self.fh.close()
        self.index += 1
        self.fh = open(self.base.parent / f"{self.base.name}.part-{self.index:02d}", "wb")
        self.left = PIECE_BYTES

    def close(self):
        if self.fh is not None:
            self.fh.close()
        super().close()


def check_outputs(out_dir):
    """`gpu_job.check_outputs`, and at most MAX_TOTAL_BYTES in all -> `out_dir`."""
    out_dir = gpu_job.check_outputs(out_dir)
    total = sum(p.stat().st_size for p in out_dir.iterdir())
    if total > MAX_TOTAL_BYTES:
        raise ValueError(f"{out_dir} holds {total / 2**20:.1f} MB, at most {MAX_TOTAL_BYTES // 2**20} MB may come back")
    return out_dir


def unpack(out_dir, dest):
    """Join and extract the selection.tar.gz.part-NN of a returned folder into `dest` -> `dest`."""
    parts = sorted(pathlib.Path(out_dir).glob(f"{TAR}.part-*"))
    if not parts:
        raise FileNotFoundError(f"no {TAR}.part-* in {out_dir}; pass the folder a `select run` or `select continue` call returned")
    dest = pathlib.Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    stream = io.BytesIO(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(fileobj=stream, mode="r:gz") as tar:
        tar.extractall(dest, filter="data")
    return dest


# ---------------------------------------------------------------- scoring what came back (CPU side)


TABLE_COLUMNS = ablation.FAMILY_COLUMNS  # n, KID, FID, precision, recall, coverage, copies, near-dups, MS-SSIM


def score_returned(out_dir, dest=None, features="auto", n=None, data_dir=None, val=None, train=None):
    """Score the samples a call returned (Inception features when the [fid] extra is installed; copies on
    domain features against the training scans) -> {"stage1", "curve"}: markdown and JSON files in `dest`
    (default: `<out_dir>-scored/`): stage1.md / stage1.json, one row per candidate, and curve.md / curve.json,
    the leader over every stage."""
    out_dir = pathlib.Path(out_dir)
    state = files.read_json(out_dir / "selection.json", "pass the folder a `select run` call returned")
    job = files.read_json(out_dir / "job.json", "pass the folder a `select run` call returned")
    dest = pathlib.Path(dest or out_dir.parent / f"{out_dir.name}-scored")
    unpacked = unpack(out_dir, dest / "unpacked")
    val, train = real_sets(data_dir, val, train)
    rows = {}
    for file in sorted((unpacked / "samples").glob("*.npz")):
        images = load_samples(file)  # [N, 128, 128, 1]
        size = min(n or len(images), len(images))
        main = report_lib.evaluate_images(images, val, n=size, features=features, baselines=False)
        if train is not None:  # copies: pixels and domain features against every training scan
            copies = report_lib.evaluate_images(images, val, train=train, n=size, features="domain", baselines=False)
            main["generated"]["memorisation"] = copies["generated"]["memorisation"]
        report_lib.write_report(main, dest / f"eval-{file.stem}.json")
        rows[file.stem] = main
    stage1 = stage1_table(state, job, rows)
    curve = leader_curve(state, unpacked)
    (dest / "stage1.md").write_text(stage1["markdown"] + "\n")
    gpu_job.write_json(stage1["rows"], dest / "stage1.json")
    (dest / "curve.md").write_text(curve["markdown"] + "\n")
    gpu_job.write_json(curve["rows"], dest / "curve.json")
    return {"stage1": dest / "stage1.md", "curve": dest / "curve.md", "dest": dest}


def stage1_table(state, job, reports):
    """Markdown + rows: per candidate its machine numbers (domain KID, epochs, images seen, guard trips) and the
    scores here (`reports`: sample-file stem -> evaluate report); the leader's after-stage rows below."""
    header = ["candidate", "status", "epochs", "images seen", "wall min", "guard trips", "domain KID (machine)", "features"] + [c[0] for c in TABLE_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out = []
    for name, c in state["candidates"].items():
        out.append(_row(name, _status(state, name), c, reports.get(ablation.slug(name))))
    after = [s for s in state["stages"] if "leader_after" in s]
    for stage in after:  # the returned final samples are those of the last stage
        final = reports.get(f"{ablation.slug(state['leader'])}-final") if stage is after[-1] else None
        numbers = {**stage["leader_after"], "wall_seconds": stage["wall_minutes"] * 60}  # the wall time of that stage
        out.append(_row(f"{state['leader']}, after {stage['name']}", "leader", numbers, final))
    for row in out:
        cells = [row["candidate"], row["status"], f"{row['epochs']}", f"{row['images_seen']}", _fmt(row["wall_seconds"], 60, "{:.1f}"),
                 f"{row['guard_trips']}", _fmt(row["domain_kid"], 1, "{:.4f}"), row["features"] or "n/a"]
        cells += [ablation.cell(row["generated"], keys, fmt) if row["generated"] else "n/a" for _, keys, fmt in TABLE_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    device = ", ".join(job.get("devices", [])) or job.get("hardware", "")
    fallback = " (fallback: every candidate excluded)" if state.get("fallback") else ""
    lines.append(f"\nleader: {state['leader']}{fallback}; tied: {', '.join(state.get('tied', []))}; "
                 f"device: {device} ({job.get('keras_backend')}); call {job.get('call_wall_minutes')} min; stages: "
                 + "; ".join(f"{s['name']} {s['wall_minutes']} min" for s in state["stages"]))
    lines.append(f"\n{state['rule']}")
    return {"markdown": "\n".join(lines), "rows": out}


def _status(state, name):
    excluded = state["candidates"][name].get("excluded")
    if name == state["leader"]:
        return f"leader (fallback; {excluded})" if excluded else "leader"
    return f"excluded: {excluded}" if excluded else "tied" if name in state.get("tied", []) else ""


def _row(name, status, numbers, report):
    return {
        "candidate": name, "status": status, "epochs": numbers.get("epochs"), "images_seen": numbers.get("images_seen"),
        "wall_seconds": numbers.get("wall_seconds"), "guard_trips": numbers.get("guard_trips"), "domain_kid": numbers.get("kid"),
        "features": report["features"] if report else None, "generated": report["generated"] if report else None,
    }


def _fmt(value, divide, fmt):
    return "n/a" if value is None else fmt.format(value / divide)


def leader_curve(state, unpacked, rows=12):
    """The leader over every stage from its returned logs: about `rows` epochs (each stage's end among them)
    with losses, images seen, the domain KID of the metrics log and the guard trips so far -> markdown + rows."""
    slug = ablation.slug(state["leader"])
    run = pathlib.Path(unpacked) / "runs" / slug
    stats = files.read_jsonl(run / "stats.jsonl") if (run / "stats.jsonl").is_file() else []
    kid = {r["epoch"]: r["value"] for r in files.read_jsonl(run / "metric-kid.jsonl")} if (run / "metric-kid.jsonl").is_file() else {}
    trips = [g["epoch"] for g in files.read_jsonl(run / "guard.jsonl")] if (run / "guard.jsonl").is_file() else []
    ends = {state["stages"][0]["last_epoch"].get(state["leader"]): "stage 1"}
    ends.update({s["last_epoch"]: s["name"] for s in state["stages"][1:] if "last_epoch" in s})
    wanted = {e for e in ends if e} | set(kid)
    if stats:
        wanted |= set(np.linspace(1, len(stats), min(rows, len(stats))).round().astype(int).tolist())
    header = "| epoch | stage | images seen | d_loss | g_loss | domain KID (log) | guard trips so far |"
    lines = [header, "|" + "---|" * 7]
    out = []
    for r in stats:
        e = r["epoch"]
        if e not in wanted:
            continue
        stage = next((s for end, s in sorted((k, v) for k, v in ends.items() if k) if e <= end), "")
        row = {"epoch": e, "stage": stage + (" (end)" if e in ends else ""), "images_seen": r.get("images_seen"), "d_loss": r.get("d_loss"),
               "g_loss": r.get("g_loss"), "domain_kid": kid.get(e), "guard_trips": sum(t <= e for t in trips)}
        out.append(row)
        lines.append(f"| {e} | {row['stage']} | {row['images_seen']} | {_fmt(row['d_loss'], 1, '{:.3f}')} | {_fmt(row['g_loss'], 1, '{:.3f}')} | "
                     f"{_fmt(row['domain_kid'], 1, '{:.4f}')} | {row['guard_trips']} |")
    return {"markdown": f"Leader {state['leader']} over every stage:\n\n" + "\n".join(lines), "rows": out}


# ---------------------------------------------------------------- CPU screening


def cpu_screen(root=None, candidates=None, minutes=30.0, seeds=(0,), data_dir=None, n=500, images=None, val=None, train=None):
    """Screen CPU-size candidates (rows of the `selection-cpu` ablation study, default all) at equal wall time on
    this machine, one after another, score them on domain features and apply RULE -> (markdown table, selection)."""
    root = pathlib.Path(root or paths.MODELS_DIR / "ablation-selection-cpu")
    rows = list(ablation.SELECTION_CPU) if candidates is None else list(candidates)
    unknown = [r for r in rows if r not in ablation.SELECTION_CPU]
    if unknown:
        raise ValueError(f"unknown selection-cpu row(s) {', '.join(unknown)}; choose from {', '.join(ablation.SELECTION_CPU)}")
    run_dirs = ablation.run(rows, seeds, minutes, root, data_dir=data_dir, images=images)
    ablation.evaluate(run_dirs, n=n, data_dir=data_dir, val=val, train_images=train)
    numbers = {}
    for row in rows:
        reports = [files.read_json(root / f"{ablation.slug(row)}-s{s}" / "eval.json", ablation.RERUN) for s in seeds]
        kids = [r["generated"]["kid"]["mean"] for r in reports]
        numbers[row] = {
            "trained": True, "kid": float(np.mean(kids)), "kid_std": float(max(np.std(kids), np.mean([r["generated"]["kid"]["std"] for r in reports]))),
            "ms_ssim": float(np.mean([r["generated"]["ms_ssim"] for r in reports])), "real_ms_ssim": reports[0]["real_ms_ssim"],
            "blank_fraction": float(np.mean([r["generated"]["blank_fraction"] for r in reports])),
        }
    selection = {"rule": RULE, "seeds": list(seeds), "minutes": minutes, "candidates": numbers, **pick_leader(numbers)}
    gpu_job.write_json(selection, root / "selection.json")
    return ablation.table(root, study="selection-cpu"), selection


# ---------------------------------------------------------------- small helpers


def _staging(root):
    return pathlib.Path(root) / "return"


def _save_state(root, state):
    files.write_text_atomic(pathlib.Path(root) / "selection.json", json.dumps(state, indent=2) + "\n")
    return state


def _minutes(since):
    return round((time.time() - since) / 60.0, 3)

