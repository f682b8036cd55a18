"""Per-backend compilation of functions of inputs (projection, inversion): the only backend-specific code outside training's step.

`value_and_grad(fn)` and `jit_numpy(fn)` take a function written in `keras.ops` and compile it once for
the running Keras backend (`jax.jit` or `tf.function`), taking and returning NumPy.
"""
import contextlib

import keras
import numpy as np
from keras import ops


@contextlib.contextmanager
def dtype_policy(name):
    """Layers built inside take the Keras dtype policy `name` ("float32", "mixed_bfloat16", "mixed_float16");
    the global policy is restored after."""
    saved = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(saved)


def with_label(x, labels):
    """A model's input: x alone, or [x, labels] for conditional models."""
    return x if labels is None else [x, labels]


def value_and_grad(fn):
    """`fn(x, *args) -> scalar` (keras.ops; models called in inference mode) => `g(x, *args) -> (value, d fn / d x)`
    as NumPy, compiled once for the running backend (one trace per input shape): the only
    backend-specific code of projection."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        compiled = jax.jit(jax.value_and_grad(fn))
        return lambda x, *args: tuple(np.asarray(v) for v in compiled(*_float32(x, *args)))
    if backend == "tensorflow":
        import tensorflow as tf

        def both(x, *args):
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = fn(x, *args)
            return value, tape.gradient(value, x)

        compiled = tf.function(both, autograph=False, reduce_retracing=True)
        return lambda x, *args: tuple(np.asarray(v) for v in compiled(*map(tf.convert_to_tensor, _float32(x, *args))))
    raise ValueError(f"projection runs on the tensorflow or jax Keras backend, not {backend!r}; set KERAS_BACKEND")


def jit_numpy(fn):
    """`fn(*arrays)` (keras.ops) compiled for the running backend, taking and returning NumPy."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        compiled = jax.jit(fn)
    elif backend == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(fn, autograph=False, reduce_retracing=True)
    else:
        compiled = fn
    return lambda *arrays: np.asarray(compiled(*map(ops.convert_to_tensor, _float32(*arrays))))


def _float32(*arrays):
    return [np.asarray(a, np.float32) for a in arrays]
