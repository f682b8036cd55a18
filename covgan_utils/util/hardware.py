"""The one description of the machine a run or report was made on (CPU cores and model, or GPU names)."""
import os
import platform

import keras


def hardware():
    """One line naming the machine the runs were trained on (and the Keras backend when it is not TensorFlow)."""
    gpus = _gpu_names()
    if gpus:
        return ", ".join(gpus)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()  # taskset pins runs
    cores = f"{usable} cores" if usable == os.cpu_count() else f"{usable} of {os.cpu_count()} cores"
    return f"CPU ({cores}, {platform.processor() or platform.machine()})"


def _gpu_names():
    """Names of the GPUs the Keras backend sees (empty on a CPU-only machine)."""
    if keras.backend.backend() == "jax":
        import jax

        return [f"{d.device_kind} (JAX)" for d in jax.devices() if d.platform == "gpu"]
    import tensorflow as tf  # the TensorFlow backend: TensorFlow is loaded already

    return [tf.config.experimental.get_device_details(g).get("device_name", "GPU") for g in tf.config.list_physical_devices("GPU")]
