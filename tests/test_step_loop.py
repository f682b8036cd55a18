"""An epoch in one dispatch (`step.run`: device-resident data, the steps looped inside the compiled
function, lazy R1 chosen per step) gives the updates of the same steps run one by one, and the EMA
generator's BatchNorm statistics are re-estimated exactly when something samples or saves."""
import keras
import numpy as np
import pytest

from covgan_utils import config
from covgan_utils.training import gan as gan_lib
from covgan_utils.training import loop, losses, steps

# every part of the step that draws randomness or branches: augmentation with ADA, lazy R1, EMA, 2 G steps
FULL = {"augment": "translation,cutout", "ada_target": 0.6, "ema_decay": 0.9, "r1_gamma": 1.0, "r1_every": 2, "loss": "non-saturating", "g_steps": 2}
TOL = 1e-6 if keras.backend.backend() == "jax" else 1e-5  # float rounding of differently fused programs
# Under JAX the lazy-R1 branch (`lax.cond`) compiles the augmentation's gradients apart from the rest of
# the step, which changes float rounding (bit-exact without augmentation or without lazy R1). Adam
# amplifies rounding in near-zero gradients, so after 4 steps the states differ by at most 1e-3 of how far
# the weights moved (2e-2 for the optimizer moments); running R1 on the wrong steps instead moves them
# by far more: `test_the_tolerance_catches_a_lost_random_stream`.
REL = {"d": 1e-3, "g": 1e-3, "ema": 1e-3, "d_opt": 2e-2, "g_opt": 2e-2}


def _gan(cfg):
    gan_lib.seed_everything(cfg.seed)  # the same initial weights for every GAN of a test
    gan = gan_lib.GAN(cfg)
    gan.compile()
    return gan


def _state(gan):
    return {f"{group}/{i}": np.asarray(v.numpy()) for group, vs in gan.state_groups().items() for i, v in enumerate(vs)}


def _assert_close(a, b, atol):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=atol + 1e-5 * np.abs(a[key]).max(), err_msg=key)


def _moved(a, b, init):
    """Per state group: the distance between two states over the distance `a` moved from `init`."""
    out = {}
    for group in {key.split("/")[0] for key in a}:
        keys = [k for k in a if k.startswith(group + "/")]
        norm = lambda x, y: np.sqrt(sum(((x[k].astype(np.float64) - y[k]) ** 2).sum() for k in keys))  # noqa: E731
        out[group] = norm(a, b) / max(norm(a, init), 1e-12)
    return out


def _assert_same_run(a, b, init):
    """Equal counters, RNG and augmentation p; float state equal to the tolerance above (exact where it is)."""
    for key in a:
        if key.split("/")[0] in ("misc", "rng") or not np.issubdtype(a[key].dtype, np.floating) or a[key].ndim == 0:
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-6, err_msg=key)
    moved = _moved(a, b, init)
    assert all(moved[g] <= REL[g] for g in REL if g in moved), moved


class EveryBatch(keras.callbacks.Callback):
    """A callback acting after each batch: the loop then runs the steps one by one."""

    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


ON_JAX = keras.backend.backend() == "jax"
# Under JAX (the second pass of `make test`) the full step's one-dispatch epoch is checked against the device
# loop below, which compiles it once; the one-by-one comparison runs on the plain step there.
ONE_BY_ONE = [{}] if ON_JAX else [{}, FULL]


@pytest.mark.parametrize("extra", ONE_BY_ONE, ids=["plain", "full"][: len(ONE_BY_ONE)])
def test_one_dispatch_equals_the_steps_one_by_one(blob_images, extra):
    cfg = config.get_preset("smoke", **extra)
    order = loop.epoch_order(len(blob_images), cfg.batch_size, cfg.seed, 0)  # [4, 10]
    dispatched, stepped, init = _gan(cfg), _gan(cfg), _state(_gan(cfg))
    step = dispatched.stepper()
    step.load()
    total = step.run(step.put(blob_images), order, dispatched.d_steps_done())
    step.store()
    logs = []
    for j, rows in enumerate(order):
        logs.append({k: float(v) for k, v in stepped.train_step(blob_images[rows]).items()})
        assert stepped.d_steps_done() == j + 1
    assert sum(losses.r1_is_due(cfg, j) for j in range(len(order))) == (2 if extra else 0)  # both branches ran
    if extra:
        _assert_same_run(_state(dispatched), _state(stepped), init)
    else:
        _assert_close(_state(dispatched), _state(stepped), TOL)
    for key, value in total.items():
        np.testing.assert_allclose(float(value) / len(order), np.mean([row[key] for row in logs]), rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.skipif(not ON_JAX, reason="the JAX step's choice between its device loop and dispatch per step")
@pytest.mark.parametrize("extra", [{}, FULL], ids=["plain", "full"])
def test_the_jax_device_loop_equals_dispatch_per_step(blob_images, extra):
    cfg = config.get_preset("smoke", **extra)
    order = loop.epoch_order(len(blob_images), cfg.batch_size, cfg.seed, 0)
    states, totals = [], []
    for on_device in (True, False):  # lax.fori_loop over the epoch (GPUs), or one dispatch per step (CPUs)
        gan = _gan(cfg)
        step = gan.stepper()
        step.loop_on_device = on_device
        step.load()
        totals.append(step.run(step.put(blob_images), order, 0))
        step.store()
        states.append(_state(gan))
    if extra:
        _assert_same_run(*states, _state(_gan(cfg)))
    else:
        _assert_close(*states, TOL)
    for key in totals[0]:
        np.testing.assert_allclose(float(totals[0][key]), float(totals[1][key]), rtol=1e-5, atol=1e-6, err_msg=key)


def test_the_tolerance_catches_a_lost_random_stream(blob_images):
    cfg = config.get_preset("smoke", **FULL)
    order = loop.epoch_order(len(blob_images), cfg.batch_size, cfg.seed, 0)
    dispatched, wrong, init = _gan(cfg), _gan(cfg), _state(_gan(cfg))
    step = dispatched.stepper()
    step.load()
    step.run(step.put(blob_images), order, 0)
    step.store()
    keras.random.normal((1,), seed=wrong.seed_generator)  # one extra draw: the noise stream a lost RNG state gives
    for rows in order:
        wrong.train_step(blob_images[rows])
    moved = _moved(_state(dispatched), _state(wrong), init)
    assert all(moved[g] > 3 * REL[g] for g in ("g", "ema", "d_opt", "g_opt")), moved  # (D's group: mostly BN statistics, far from init)


def test_run_epochs_is_the_same_with_a_per_batch_callback(blob_images):
    cfg = config.get_preset("smoke", **FULL)
    orders = lambda epoch: loop.epoch_order(len(blob_images), cfg.batch_size, cfg.seed, epoch)  # noqa: E731
    dispatched, stepped, hook, init = _gan(cfg), _gan(cfg), EveryBatch(), _state(_gan(cfg))
    logs_a = dispatched.run_epochs(blob_images, orders, 0, 2)
    logs_b = stepped.run_epochs(blob_images, orders, 0, 2, [hook])
    assert hook.batches == 8  # 2 epochs x 4 batches, one by one
    _assert_same_run(_state(dispatched), _state(stepped), init)
    assert logs_a.keys() == logs_b.keys() and all(abs(logs_a[k] - logs_b[k]) < 1e-4 for k in logs_a)


def test_conditional_data_travels_with_its_labels(blob_images):
    cfg = config.get_preset("smoke", conditional=True, classes=("CT_COVID", "CT_NonCOVID"))
    labels = (np.arange(len(blob_images)) % 2)[:, None].astype(np.int32)  # [40, 1]
    order = loop.epoch_order(len(blob_images), cfg.batch_size, cfg.seed, 3)
    dispatched, stepped = _gan(cfg), _gan(cfg)
    dispatched.run_epochs((blob_images, labels), lambda e: order, 0, 1)
    stepped.run_epochs((blob_images, labels), lambda e: order, 0, 1, [EveryBatch()])
    _assert_close(_state(dispatched), _state(stepped), TOL)


def test_epoch_order_is_a_seeded_permutation_of_full_batches():
    a = loop.epoch_order(45, 10, 7, 3)
    assert a.shape == (4, 10) and a.dtype == np.int32 and len(set(a.ravel())) == 40 and a.max() < 45
    np.testing.assert_array_equal(a, loop.epoch_order(45, 10, 7, 3))
    assert not np.array_equal(a, loop.epoch_order(45, 10, 7, 4))
    with pytest.raises(ValueError, match="batch size 50 is larger than the 45 training images"):
        loop.epoch_order(45, 50, 7, 3)


@pytest.mark.skipif(ON_JAX, reason="the EMA refresh is backend-independent: the TensorFlow pass covers it")
def test_ema_statistics_are_refreshed_when_read_not_every_epoch(blob_images, tmp_path):
    cfg = config.get_preset("smoke", ema_decay=0.9)
    gan = _gan(cfg)
    gan.run_epochs(blob_images, lambda e: loop.epoch_order(40, 10, 0, e), 0, 1)
    assert gan.ema_stale  # nothing read the EMA generator during training: no refresh pass ran
    means = [layer.moving_mean for layer in gan.ema_generator.layers if isinstance(layer, keras.layers.BatchNormalization)]
    before = np.asarray(means[0].numpy())
    gan.save_checkpoint(tmp_path / "checkpoint-000001.npz", 1)  # saving refreshes first
    assert not gan.ema_stale
    after = np.asarray(means[0].numpy())
    assert np.abs(after - before).max() > 1e-4  # the refresh changed the copied live statistics
    gan.refresh_ema_batchnorm()  # deterministic: a second refresh gives the saved statistics
    np.testing.assert_allclose(np.asarray(means[0].numpy()), after, atol=1e-6)
    gan.ema_stale = True
    first = gan.sample(range(4))  # sampling refreshes first, too
    assert not gan.ema_stale
    np.testing.assert_allclose(gan.sample(range(4)), first, atol=1e-6)


def test_epoch_totals_add_the_step_logs_key_by_key_and_refuse_other_keys():
    total = {k: 1.0 for k in losses.LOG_KEYS}
    assert steps.summed(total, {k: 2.0 for k in losses.LOG_KEYS}) == {k: 3.0 for k in losses.LOG_KEYS}
    with pytest.raises(KeyError, match="LOG_KEYS"):
        steps.summed(total, {**total, "extra": 1.0})  # a new log would otherwise vanish from stats.jsonl silently
    with pytest.raises(KeyError, match="do not match"):
        steps.summed(total, {"d_loss": 1.0})
