"""The two-stage selection of one GPU call (`studies.selection`), end to end on CPU with smoke candidates."""
import json
import math
import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest
from conftest import one_line_error

from covgan_utils import cli, config, runs
from covgan_utils.cli import studies as cli_studies
from covgan_utils.data import dataset
from covgan_utils.studies import ablation, gpu_job, selection
from covgan_utils.util import hardware


def _numbers(kid, kid_std=0.002, ms_ssim=0.32, real=0.30, blank=0.0, trained=True):
    return {"trained": trained, "kid": kid, "kid_std": kid_std, "ms_ssim": ms_ssim, "real_ms_ssim": real, "blank_fraction": blank}


def test_the_rule_excludes_blank_and_collapsed_runs_and_breaks_ties_by_diversity():
    numbers = {
        "a": _numbers(0.010, ms_ssim=0.34),  # lowest KID kept, but less diverse than b
        "b": _numbers(0.013, ms_ssim=0.31),  # within 2 std (0.003 <= 2 x 0.002) of a, MS-SSIM closest to the real 0.30
        "c": _numbers(0.001, blank=0.10),  # best KID, but 10% blank samples
        "d": _numbers(0.002, ms_ssim=0.36),  # collapsed: 0.36 > 0.30 + 0.05
        "e": _numbers(0.020, ms_ssim=0.30),  # the most diverse, but not tied: 0.010 > 2 x 0.002
        "f": _numbers(math.nan, trained=False),
        "g": _numbers(math.nan),
    }
    chosen = selection.pick_leader(numbers)
    assert (chosen["leader"], chosen["tied"], chosen["fallback"]) == ("b", ["a", "b"], False)
    assert sorted(chosen["excluded"]) == ["c", "d", "f", "g"]
    assert "blank" in chosen["excluded"]["c"] and "collapse" in chosen["excluded"]["d"] and chosen["excluded"]["f"] == "no checkpoint"
    assert chosen["excluded"]["g"] == "KID not finite"
    assert selection.pick_leader({k: numbers[k] for k in "ace"})["leader"] == "a"  # no tie: the lowest KID
    wide = {**numbers, "e": _numbers(0.020, kid_std=0.006, ms_ssim=0.30)}  # its own spread makes e tie with a
    assert selection.pick_leader(wide)["leader"] == "e"
    everyone_out = selection.pick_leader({k: numbers[k] for k in "cdf"})
    assert (everyone_out["leader"], everyone_out["fallback"]) == ("c", True)  # the lowest finite KID that trained
    with pytest.raises(ValueError, match="no candidate finished stage 1"):
        selection.pick_leader({"f": numbers["f"]})
    assert "more than 5% of its samples are blank" in selection.RULE and "within 2 standard deviations" in selection.RULE


def test_candidates_and_plan_are_checked_before_anything_runs():
    assert {"gpu", "r3gan-gpu", "style-ada-gpu"} <= set(selection.CANDIDATES)
    planned, _ = selection.check_plan(None, 8.5)  # the default plan: the candidates the CPU screen kept
    assert list(planned) == selection.DEFAULT_CANDIDATES and "r3gan-gpu" not in planned and "style-ada-gpu" in planned
    assert set(selection.SCREENED_OUT) <= set(selection.CANDIDATES)
    assert ("gpu rpgan" in selection.CANDIDATES) == ("rpgan" in config.LOSSES)
    with pytest.raises(ValueError, match="unknown candidate.*nope"):
        selection.check_candidates(["smoke", "nope"])
    with pytest.raises(ValueError, match="needs preset 'missing', which this version lacks"):
        selection.check_candidates(["x"], {"x": ("missing", {})})
    with pytest.raises(ValueError, match="stage-1 minutes must be in"):
        selection.check_plan(["smoke"], minutes=2, stage1_minutes=2)
    chosen, stage1 = selection.check_plan(["smoke", "smoke-style"], minutes=10)
    assert list(chosen) == ["smoke", "smoke-style"] and stage1 == 4.5
    cfg = selection.candidate_config("smoke-style", chosen["smoke-style"], 3)
    assert (cfg.guard, cfg.guard_watch, cfg.time_budget_minutes, cfg.arch, cfg.metrics_features) == (True, True, 3.0, "style", "domain")
    screened = ablation.row_config("cpu lean", 1, 30)
    assert (screened.guard, screened.guard_watch, screened.seed, screened.time_budget_minutes) == (True, True, 1, 30)
    assert (screened.arch, screened.loss) == (config.get_preset("best").arch, config.get_preset("best").loss)


def test_the_plan_end_to_end_on_cpu(tmp_path, capsys):
    from widget_fixtures import make_scans

    cache = dataset.export_cache(tmp_path / "c.npz", make_scans(tmp_path / "scans", n_patients=5, slices=4))
    root, out = tmp_path / "root", tmp_path / "out"
    names = ["smoke", "smoke-style"]
    selection.run_selection(cache, out, minutes=5, stage1_minutes=0.04, names=names, n_samples=16, root=root, reserve_minutes=0.0, stage2_minutes=0.04)

    # stage 1: each candidate in its own process, scored, the rule applied as written
    state = json.loads((out / "selection.json").read_text())
    leader, candidates = state["leader"], state["candidates"]
    assert list(candidates) == names and state["rule"] == selection.RULE
    pids = {json.loads((root / ablation.slug(n) / "done.json").read_text())["pid"] for n in names}
    assert len(pids) == 2 and os.getpid() not in pids and all((root / f"{ablation.slug(n)}.log").is_file() for n in names)
    assert selection.pick_leader(candidates) == {k: state[k] for k in ("leader", "tied", "excluded", "fallback")}
    assert all(math.isfinite(c["kid"]) and c["epochs"] >= 1 and c["n"] == 16 for c in candidates.values())

    # stage 2: the leader's run goes on from its last stage-1 epoch
    stage1, stage2 = state["stages"]
    first_end = stage1["last_epoch"][leader]
    assert stage2["name"] == "stage 2" and stage2["first_epoch"] == first_end + 1 and stage2["last_epoch"] > first_end
    stats = [json.loads(line)["epoch"] for line in (root / ablation.slug(leader) / "stats.jsonl").read_text().splitlines()]
    assert stats == list(range(1, stage2["last_epoch"] + 1))

    # what comes back: within the limits, the leader's float16 generator, everything else in the tar
    returned = {p.name: p.stat().st_size for p in out.iterdir()}
    assert {"selection.json", "job.json", "generator.npz", "config.json", "source.json", "selection.tar.gz.part-00"} <= set(returned)
    assert len(returned) <= gpu_job.MAX_FILES and max(returned.values()) < gpu_job.MAX_FILE_BYTES and selection.check_outputs(out) == out
    with np.load(out / "generator.npz") as z:
        assert {z[k].dtype for k in z.files if z[k].dtype.kind == "f"} == {np.dtype(np.float16)}
    assert runs.load_release(out).name  # loads
    job = json.loads((out / "job.json").read_text())
    assert job["leader"] == leader and set(job["images_seen"]) == set(names) and job["precision"][leader] == hardware.fast_precision()
    assert [s["name"] for s in job["stages"]] == ["stage 1", "stage 2"] and job["left_behind"] == []
    other = next(n for n in names if n != leader)
    assert f"generators/{ablation.slug(other)}/generator.npz" in job["packed"] and f"samples/{ablation.slug(leader)}-final.npz" in job["packed"]
    unpacked = selection.unpack(out, tmp_path / "unpacked")
    samples = np.load(unpacked / "samples" / f"{ablation.slug(other)}.npz")["images"]
    assert samples.dtype == np.uint8 and samples.shape == (16, 128, 128, 1)

    # a second call continues the leader's run folder
    more = selection.continue_leader(tmp_path / "out2", minutes=0.1, root=root, reserve_minutes=0.0)
    again = json.loads((more / "selection.json").read_text())["stages"][-1]
    assert again["name"] == "continue 1" and again["first_epoch"] == stage2["last_epoch"] + 1
    assert len(list(more.iterdir())) <= gpu_job.MAX_FILES

    # scored here from the returned files alone
    assert cli.main(["select", "score", str(out), "--to", str(tmp_path / "scored"), "--features", "domain", "--data", str(cache)]) == 0
    printed = capsys.readouterr().out
    table = (tmp_path / "scored" / "stage1.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| smoke")}
    assert set(rows) == {"smoke", "smoke-style", f"{leader}, after stage 2"} and "| leader" in rows[leader]
    report = json.loads((tmp_path / "scored" / f"eval-{ablation.slug(other)}.json").read_text())
    assert f"{report['generated']['kid']['mean']:.4f}" in rows[other] and "memorisation" in report["generated"]
    assert f"| {candidates[other]['kid']:.4f} |" in rows[other]  # the machine's domain KID beside
    curve = (tmp_path / "scored" / "curve.md").read_text()
    assert f"| {first_end} | stage 1 (end) |" in curve and f"| {stage2['last_epoch']} | stage 2 (end) |" in curve
    assert f"Leader {leader} over every stage" in printed and rows[other] in printed

    # the machine was released: one line, no traceback
    shutil.rmtree(root / ablation.slug(leader))
    assert cli.main(["select", "continue", "--out", str(tmp_path / "out3"), "--minutes", "1", "--root", str(root)]) == 2
    one_line_error(capsys, "is gone", "select run")
    assert not (tmp_path / "out3").exists()


def test_select_commands_parse_and_refuse_a_bad_plan_before_making_anything(tmp_path, capsys):
    args = cli.build_parser().parse_args(["select", "run", "--data", "c.npz", "--out", "o", "--minutes", "9", "--stage1-minutes", "4",
                                          "--candidates", "gpu", "r3gan-gpu"])
    assert args.handler is cli_studies.cmd_select_run and (args.minutes, args.stage1_minutes, args.n_samples) == (9.0, 4.0, 500)
    assert args.candidates == ["gpu", "r3gan-gpu"]
    args = cli.build_parser().parse_args(["select", "continue", "--out", "o", "--minutes", "5"])
    assert args.handler is cli_studies.cmd_select_continue and args.root is None
    bad = ["select", "run", "--data", str(tmp_path / "c.npz"), "--out", str(tmp_path / "o"), "--minutes", "2", "--stage1-minutes", "3", "--candidates", "smoke"]
    assert cli.main(bad) == 2
    one_line_error(capsys, "stage-1 minutes must be in (0, 2.0)")
    assert not (tmp_path / "o").exists()
    with pytest.raises(FileNotFoundError, match="no selection under .*start again with `select run`"):
        selection.continue_leader(tmp_path / "o", 1, root=tmp_path / "nothing")


def test_cpu_screen_trains_scores_and_applies_the_rule(tmp_path, blob_images, monkeypatch):
    monkeypatch.setitem(ablation.SELECTION_CPU, "cpu lean", ("smoke", ablation.WATCH_ONLY))
    table, chosen = selection.cpu_screen(tmp_path, ["cpu lean"], minutes=1e-4, seeds=(0,), n=20, images=blob_images,
                                         val=blob_images[:20], train=blob_images[20:])
    assert chosen["leader"] == "cpu lean" and json.loads((tmp_path / "selection.json").read_text())["leader"] == "cpu lean"
    assert config.Config.load(tmp_path / "cpu-lean-s0").guard_watch
    row = [line for line in table.splitlines() if line.startswith("| cpu lean |")][0]
    assert f"{chosen['candidates']['cpu lean']['kid']:.4f}" in row
    with pytest.raises(ValueError, match="unknown selection-cpu row"):
        selection.cpu_screen(tmp_path, ["cpu magic"], minutes=1)


def test_the_script_refuses_bad_select_arguments_with_usage(tmp_path):
    script = pathlib.Path(__file__).resolve().parents[1] / "tools" / "gpu_run.sh"
    calls = [
        (("select", tmp_path), "select needs BUNDLE_DIR and OUT_DIR"),
        (("select", tmp_path, tmp_path / "o"), "select needs --minutes"),
        (("select", tmp_path, tmp_path / "o", "--minutes", "5", "--continue", "--stage1-minutes", "2"), "--stage1-minutes belongs to the first call"),
        (("select", tmp_path, tmp_path / "o", "--minutes", "5", "--candidates"), "--candidates needs at least one NAME"),
        (("select", tmp_path, tmp_path / "o", "--minutes", "5", "stray"), "unexpected argument stray"),
        (("select", tmp_path, tmp_path / "o", "--minutes", "5"), "run 'tools/gpu_run.sh prepare' first"),
    ]
    for args, message in calls:
        done = subprocess.run(["bash", str(script), *map(str, args)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "usage: tools/gpu_run.sh" in done.stderr and message in done.stderr, (args, done.stderr)
    assert not (tmp_path / "o").exists()
