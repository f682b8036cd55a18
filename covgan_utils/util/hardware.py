"""The one description of the machine a run or report was made on: CPU cores and model, the GPUs the Keras
backend computes on (JAX or TensorFlow), as one line (`hardware`) or as the fields of a job file (`device_info`)."""
import os
import pathlib
import platform
import warnings

import keras


def hardware():
    """One line naming the machine: its GPUs (with "(JAX)" under JAX), else "CPU (<cores>, <model>)"."""
    gpus = [name for _, name in gpus_seen()]
    if gpus:
        suffix = " (JAX)" if keras.backend.backend() == "jax" else ""
        return ", ".join(name + suffix for name in gpus)
    usable, total = cpu_cores()
    cores = f"{usable} cores" if usable == total else f"{usable} of {total} cores"
    return f"CPU ({cores}, {cpu_model()})"


def cpu_cores():
    """(cores this process may use, cores of the machine): taskset and containers pin runs to fewer."""
    total = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else total
    return usable, total


def _cpuinfo(key):
    """The value of the first `key` line of /proc/cpuinfo, or None."""
    try:
        lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.split(":", 1)[0].strip() == key), None)


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows (the architecture at least)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def gpus_seen():
    """[(index, name)] of the GPUs the Keras backend computes on (empty on a CPU-only machine)."""
    if keras.backend.backend() == "jax":
        import jax

        return [(d.id, d.device_kind) for d in jax.devices() if d.platform == "gpu"]
    import tensorflow as tf  # the TensorFlow backend: TensorFlow is loaded already

    return [(i, tf.config.experimental.get_device_details(g).get("device_name", "GPU")) for i, g in enumerate(tf.config.list_physical_devices("GPU"))]


def device_info():
    """The backend and devices fields of a job file: keras_backend, keras_version, keras_location, jax_version or
    tensorflow_version, platform ("gpu" | "cpu"), devices ["gpu:0 <name>", ...] and host (machine, cpu, cpu_count, python)."""
    backend = keras.backend.backend()
    info = {"keras_backend": backend, "keras_version": keras.__version__, "keras_location": str(pathlib.Path(keras.__file__).parent)}
    if backend == "jax":
        import jax

        devices = jax.devices()  # every device JAX computes on, CPUs included
        info.update(jax_version=jax.__version__, platform=devices[0].platform, devices=[f"{d.platform}:{d.id} {d.device_kind}" for d in devices])
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = gpus_seen()
        info.update(tensorflow_version=tf.__version__, platform="gpu" if gpus else "cpu", devices=[f"gpu:{i} {name}" for i, name in gpus] or ["cpu"])
    info["host"] = {"machine": platform.machine(), "cpu": cpu_model(), "cpu_count": os.cpu_count(), "python": platform.python_version()}
    return info


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs with fast bfloat16 matrix work


def cpu_flags():
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    return set((_cpuinfo("flags") or "").split())


def gpu_capabilities():
    """[(major, minor)] CUDA compute capabilities of the GPUs the Keras backend computes on ((0, 0) when unknown)."""
    if keras.backend.backend() == "jax":
        import jax

        return [_capability(getattr(d, "compute_capability", "")) for d in jax.devices() if d.platform == "gpu"]
    import tensorflow as tf  # the TensorFlow backend: TensorFlow is loaded already

    return [_capability(tf.config.experimental.get_device_details(g).get("compute_capability")) for g in tf.config.list_physical_devices("GPU")]


def _capability(value):
    try:
        major, minor = (value if isinstance(value, tuple) else str(value).split("."))[:2]
        return int(major), int(minor)
    except (TypeError, ValueError):
        return (0, 0)


def fast_precision():
    """The training precision that is fast here: mixed_bfloat16 on GPUs with bfloat16 (compute capability 8.0+:
    A100, H100, H200) and on CPUs with AMX or AVX512-BF16; mixed_float16 (loss scaling) on older GPUs such as
    Colab's T4; float32 on other CPUs."""
    capabilities = gpu_capabilities()
    if capabilities:
        return "mixed_bfloat16" if min(capabilities) >= (8, 0) else "mixed_float16"
    return "mixed_bfloat16" if set(BF16_CPU_FLAGS) & cpu_flags() else "float32"


class SlowBackendWarning(UserWarning):
    """Training under a Keras backend that is much slower on this machine than the other one."""


_warned = []


def warn_if_slow_backend():
    """Warn once per process when training under JAX without a GPU: XLA's CPU convolutions make it several
    times slower than TensorFlow on the same cores (`python -m covgan_utils bench` times both backends)."""
    if keras.backend.backend() != "jax" or gpus_seen() or _warned:
        return
    _warned.append(True)
    warnings.warn("training under KERAS_BACKEND=jax on a CPU, several times slower than TensorFlow here (XLA's CPU "
                  "convolutions); set KERAS_BACKEND=tensorflow for CPU training", SlowBackendWarning, stacklevel=3)
