"""Data-parallel training on Keras's own engine: `keras.distribution.DataParallel` under JAX.

With `devices = N > 1` the GAN is built inside a `DataParallel` scope over the first N JAX devices:
every variable (weights, optimizer moments, EMA, augmentation p, the RNG state) is replicated; the
training data sit replicated on the devices and each step's batch indices are sharded along the batch
axis, so every device gathers and computes its share of the global batch. The step stays one jitted
function written for one device: XLA's partitioner (GSPMD) keeps its meaning global, so the noise is
drawn for the global batch and sharded, BatchNorm normalises with the statistics of the global batch
(synchronised), and the gradients are those of the global mean loss (averaged over devices). A few
steps on 2 devices therefore equal 1 device at the same global batch to float rounding, and checkpoints
do not depend on the device count: a run trained on 2 devices resumes on 1.

Under TensorFlow training stays on one device: `tf.distribute.MirroredStrategy` needs every step run
per replica (`strategy.run`) with the noise drawn per replica, replica-local BatchNorm unless the layers
are rebuilt with `synchronized=True`, and Keras 3 optimizers under TensorFlow's strategies are reported
to stall in `apply_gradients` (tensorflow/tensorflow#72686, keras-team/keras#19308); so `devices > 1`
is refused there with a one-line error pointing to JAX.

Several hosts: start every process with `keras.distribution.initialize()` (it calls
`jax.distributed.initialize`, reading the coordinator address, process count and id from the arguments
or the environment) before `train`; `devices` then counts the devices of all hosts.
"""
import contextlib

import keras


def device_count():
    """Devices training can use: the JAX devices this process sees (every host's, after
    `keras.distribution.initialize`); 1 under TensorFlow, which trains on one device."""
    if keras.backend.backend() != "jax":
        return 1
    return len(keras.distribution.list_devices())


def check_devices(config):
    """Refuse a device count this backend, machine or batch size cannot run, in one line with the fix."""
    n = config.devices
    if n == 1:
        return
    backend = keras.backend.backend()
    if backend != "jax":
        raise ValueError(f"devices={n}: data-parallel training runs on the JAX backend; set KERAS_BACKEND=jax, or devices=1 under {backend}")
    found = device_count()
    if n > found:
        raise ValueError(
            f"devices={n} but this machine has {found} JAX device(s); use devices={found} "
            f"(on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count={n} makes {n} virtual devices)"
        )
    if config.batch_size % n:
        raise ValueError(f"batch_size={config.batch_size} does not split over devices={n}; use a batch size divisible by {n}")


def distribution(config):
    """The `DataParallel` distribution of `config.devices` devices, or None for one device."""
    check_devices(config)
    if config.devices == 1:
        return None
    return keras.distribution.DataParallel(devices=keras.distribution.list_devices()[: config.devices])


def scope(config):
    """Context in which the GAN is built and trained: `DataParallel(devices)`, or nothing for one device."""
    dist = distribution(config)
    return dist.scope() if dist is not None else contextlib.nullcontext()
