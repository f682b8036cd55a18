"""Performance of the training step: `benchmark(...)` measures the project's step against a textbook Keras
step and a PyTorch loop of the same shapes, inside training, in FLOPs and against the device's measured
matmul peak, per preset, backend and precision, into one JSON report; `render(report)` writes
docs/PERFORMANCE.md from it. The command is `python -m covgan_utils bench`."""
from covgan_utils.bench.document import render
from covgan_utils.bench.runner import benchmark

__all__ = ["benchmark", "render"]
