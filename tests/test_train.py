import json

import numpy as np
import pytest
from conftest import assert_same_state

from covgan_utils import checkpoints, cli, config, plots, runs, sampling
from covgan_utils.training import gan as gan_lib
from covgan_utils.training import loop


def _strip(path):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in open(path)]


def test_smoke_run_writes_the_run_folder(tmp_path, blob_images):
    run = loop.train(config.get_preset("smoke"), tmp_path / "run", images=blob_images, verbose=False)
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "stats.jsonl", "samples-000001.png", "samples-000002.png", "checkpoint-000002.npz"} <= names
    rows = _strip(run / "stats.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"g_loss", "d_loss", "d_acc_real", "d_acc_fake"} <= set(rows[0])
    assert config.Config.load(run) == config.get_preset("smoke")
    written = plots.plot_run(run, real=blob_images)
    assert all(p.is_file() and p.stat().st_size > 1000 for p in written)


@pytest.mark.parametrize("extra", [{}, {"augment": "translation,cutout,brightness,contrast", "ada_target": 0.6, "ema_decay": 0.9, "r1_gamma": 1.0, "r1_every": 2, "loss": "non-saturating", "g_steps": 2}])
def test_resume_reproduces_an_uninterrupted_run(tmp_path, blob_images, extra):
    cfg = config.get_preset("smoke", epochs=4, **extra)
    whole = loop.train(cfg, tmp_path / "whole", images=blob_images, verbose=False)
    part = loop.train(cfg.replace(epochs=2), tmp_path / "part", images=blob_images, verbose=False)
    assert checkpoints.latest_checkpoint(part).name == "checkpoint-000002.npz"
    part = loop.train(cfg, part, images=blob_images, resume=True, verbose=False)
    a, b = np.load(whole / "checkpoint-000004.npz"), np.load(part / "checkpoint-000004.npz")
    assert a.files == b.files
    for key in a.files:
        assert_same_state(a[key], b[key], key)
    rows_whole, rows_part = _strip(whole / "stats.jsonl"), _strip(part / "stats.jsonl")
    assert [sorted(r) for r in rows_whole] == [sorted(r) for r in rows_part]
    for r_whole, r_part in zip(rows_whole, rows_part):
        for key in r_whole:
            assert_same_state(r_whole[key], r_part[key], key)


def test_resume_takes_the_new_time_budget_and_checkpoints_where_it_stops(tmp_path, blob_images):
    cfg = config.get_preset("smoke", epochs=1, checkpoint_every=100)
    run = loop.train(cfg, tmp_path / "run", images=blob_images, verbose=False)
    run = loop.train(cfg.replace(epochs=50, time_budget_minutes=1e-6), run, images=blob_images, resume=True, verbose=False)
    assert checkpoints.latest_checkpoint(run).name == "checkpoint-000002.npz"  # one epoch past the budget, saved on stop
    saved = config.Config.load(run)
    assert (saved.epochs, saved.time_budget_minutes, saved.checkpoint_every) == (50, 1e-6, 100)


@pytest.mark.parametrize("loss", ["bce", "non-saturating", "hinge", "wgan-gp"])
def test_losses_train_and_stay_finite(tmp_path, blob_images, loss):
    cfg = config.get_preset("smoke", loss=loss, epochs=1, spectral_norm=loss == "hinge", label_smoothing=0.1 if loss == "bce" else 0.0)
    run = loop.train(cfg, tmp_path / loss, images=blob_images, verbose=False)
    row = _strip(run / "stats.jsonl")[-1]
    assert np.isfinite(row["g_loss"]) and np.isfinite(row["d_loss"])


def test_existing_run_is_not_overwritten_without_resume(tmp_path, blob_images):
    run = loop.train(config.get_preset("smoke", epochs=1), tmp_path / "run", images=blob_images, verbose=False)
    with pytest.raises(ValueError, match="--resume"):
        loop.train(config.get_preset("smoke"), run, images=blob_images, verbose=False)


def test_run_folders_are_numbered(tmp_path):
    assert runs.new_run_dir("quick", tmp_path).name == "00000-quick"
    assert runs.new_run_dir("paper", tmp_path).name == "00001-paper"
    assert [p.name for p in runs.numbered_runs(preset="quick", root=tmp_path)] == ["00000-quick"]
    assert runs.latest_run(preset="quick", root=tmp_path) is None  # no checkpoint yet: nothing to load or resume


def test_unknown_preset_and_field():
    with pytest.raises(ValueError, match="choose from"):
        config.get_preset("nope")
    with pytest.raises(ValueError, match="unknown config"):
        config.get_preset("smoke", colour=True)


def test_time_budget_stops_early_and_checkpoints(tmp_path, blob_images):
    cfg = config.get_preset("smoke", epochs=50, time_budget_minutes=1e-4, checkpoint_every=10)
    run = loop.train(cfg, tmp_path / "run", images=blob_images, verbose=False)
    assert [json.loads(line)["epoch"] for line in open(run / "stats.jsonl")] == [1]
    assert checkpoints.latest_checkpoint(run).name == "checkpoint-000001.npz"


def test_ema_batchnorm_statistics_fit_the_averaged_weights():
    gan = gan_lib.GAN(config.get_preset("smoke", ema_decay=0.9))
    kernel = gan.ema_generator.get_layer("project").kernel
    kernel.assign(kernel * 3.0)  # averaged weights whose activations the live statistics do not describe
    z = sampling.noise_for_seeds(range(gan_lib.EMA_STATS_SEED, gan_lib.EMA_STATS_SEED + 256), 100)
    stale = np.asarray(gan.ema_generator(z, training=False))
    gan.refresh_ema_batchnorm()
    fitted = np.asarray(gan.ema_generator(z, training=False))
    batch_stats = np.asarray(gan.ema_generator(z, training=True))  # normalised with the batch's own statistics
    np.testing.assert_allclose(fitted, batch_stats, atol=2e-3)
    assert np.abs(stale - batch_stats).max() > 0.05
    assert all(layer.momentum == 0.99 for layer in gan.ema_generator.layers if hasattr(layer, "moving_mean"))


def test_set_overrides_parse_by_field_type():
    cfg = config.get_preset("smoke").with_overrides(["g_widths=16,8,8,4,4", "loss=hinge", "spectral_norm=true", "r1_gamma=0.5", "epochs=3"])
    assert cfg.g_widths == (16, 8, 8, 4, 4) and cfg.loss == "hinge" and cfg.spectral_norm is True
    assert cfg.r1_gamma == 0.5 and cfg.epochs == 3
    for bad in (["nope=1"], ["epochs"], ["epochs=many"], ["guard=maybe"]):
        with pytest.raises(ValueError, match="--set"):
            config.get_preset("smoke").with_overrides(bad)


def test_cli_set_writes_the_changed_config(tmp_path, capsys):
    from widget_fixtures import make_scans


    scans = make_scans(tmp_path / "scans", n_patients=10)  # no dependence on the real data copy
    run = tmp_path / "run"
    assert cli.main(["train", "--preset", "smoke", "--run-dir", str(run), "--data", str(scans), "--set", "epochs=1", "max_images=20", "g_steps=2"]) == 0
    saved = config.Config.load(run)
    assert (saved.epochs, saved.max_images, saved.g_steps) == (1, 20, 2)
    assert cli.main(["train", "--preset", "smoke", "--run-dir", str(tmp_path / "other"), "--data", str(scans), "--set", "loss=nope"]) == 2
    assert "--set loss=nope: loss must be one of bce, non-saturating, hinge, wgan-gp" in capsys.readouterr().err


def test_runs_started_at_once_get_distinct_numbered_folders(tmp_path):
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda i: runs.new_run_dir(("quick", "best")[i % 2], tmp_path), range(16)))
    assert sorted(int(p.name[:5]) for p in made) == list(range(16))


def test_resume_refuses_another_preset_or_architecture(tmp_path, blob_images):
    run = loop.train(config.get_preset("smoke", epochs=1), tmp_path / "run", images=blob_images, verbose=False)
    with pytest.raises(ValueError, match="preset 'smoke' \\(asked: 'quick'\\)"):
        loop.train(config.get_preset("quick", epochs=2), run, images=blob_images, resume=True, verbose=False)
    with pytest.raises(ValueError, match="g_widths"):
        loop.train(config.get_preset("smoke", epochs=2, g_widths=(8, 8, 8, 4, 4)), run, images=blob_images, resume=True, verbose=False)


def test_cli_resume_takes_the_runs_own_config(tmp_path, capsys):
    from widget_fixtures import make_scans


    scans = make_scans(tmp_path / "scans", n_patients=10)
    run = tmp_path / "run"
    base = ["train", "--run-dir", str(run), "--data", str(scans)]
    assert cli.main(base + ["--preset", "smoke", "--set", "epochs=1", "g_widths=8,8,8,4,4"]) == 0
    assert cli.main(base + ["--resume", "--epochs", "2"]) == 0  # no --preset, a --set architecture: resumes
    assert [json.loads(line)["epoch"] for line in open(run / "stats.jsonl")] == [1, 2]
    assert cli.main(base + ["--resume", "--preset", "quick", "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "preset 'smoke' (asked: 'quick')" in err and "--preset smoke" in err
