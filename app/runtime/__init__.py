"""Pose model runners: Keras, ONNX Runtime on CPUs (the fast path where there is no GPU), and torch
(one frozen graph, CUDA graphs on a GPU: the fast path where there is one).

A runner is a callable `runner(batch) -> heatmaps`:
    batch     (N, H, W, 3) float32, RGB, ImageNet-normalised (H x W = 256 x 192 for SimpleBaseline)
    heatmaps  (N, h, w, K) float32 numpy, NHWC (h x w = 64 x 48)
with `.input_size` (H, W), `.num_joints` K, `.name`, and for the start-up line `.engine`,
`.device` and `.precision`.

    load_runner(weights=None, runtime="auto", device=None, half=False)   # the product
    runner_from_model(model, runtime="onnx")    # any Keras model (tests, benchmarks, random weights)

"auto" picks TorchRunner on a CUDA GPU, KerasRunner on another GPU (Apple's MPS), and OnnxRunner on
a CPU (the device app.device chose, or, without one, where the Keras backend runs): on a CPU ONNX
Runtime runs SimpleBaseline-R50 about twice as fast as Keras' compiled predict and 1.4x as fast as
TorchRunner (`python -m benchmarks.model_bench` times them side by side on the machine at hand). On
CUDA, TorchRunner is the fastest candidate by construction: the same cuDNN kernels Keras' torch
backend calls, replayed as one CUDA graph per batch, with none of Keras' ~141,000 Python calls per
forward (benchmarks/gpu_check.py times both on the GPU, table 1, to verify it there).

The ONNX graph comes from `app.onnx_export.export_onnx` (hand-written; that module says why).
load_runner caches the exported graph beside the weights (weights/<name>.onnx) and re-exports when
the weights change.
"""

import warnings
from pathlib import Path

import keras

from app.onnx_export import export_onnx
from app.runtime.common import gpu_visible, keras_device, physical_cores  # noqa: F401 (the package's API)
from app.runtime.keras_runner import KerasRunner, half_precision  # noqa: F401
from app.runtime.onnx_runner import (  # noqa: F401
    CACHE_KEY_FIELD, OnnxRunner, cached_runner, onnx_cache_path, save_atomically, weights_cache_key,
)

RUNTIMES = ("auto", "keras", "onnx", "torch")


def runner_from_model(model: keras.Model, runtime: str = "auto", threads: int | None = None,
                      device: str | None = None, half: bool = False):
    """A runner over an in-memory Keras model; "onnx" exports it afresh (no cache) each call.

    runtime: "auto" (torch on CUDA, Keras on MPS, ONNX Runtime on a CPU), "keras", "onnx" or "torch".
    device: where app.device put the pose model ("cpu", "cuda:N", "mps"); None asks the Keras backend.
    half: float16 for the Keras and torch runners (ONNX Runtime on the CPU stays float32; TorchRunner
    on a CPU too, with a note).
    """
    runtime = resolve_runtime(runtime, device)
    if runtime == "torch":
        return _torch_runner(model, device, half, threads)
    if runtime == "keras":
        return KerasRunner(model, half=half)
    return OnnxRunner(export_onnx(model).SerializeToString(), threads=threads)


def resolve_runtime(runtime: str, device: str | None = None) -> str:
    """"auto" -> "torch" on CUDA, "keras" on another GPU (MPS), else "onnx"; the others unchanged.

    device: the pose model's device as app.device chose it ("cpu" -> "onnx" even when the backend
    could reach a GPU: the user asked for the CPU); None: whether the Keras backend runs on a GPU.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "auto":
        device = keras_device() if device is None else device
        return "torch" if device.startswith("cuda") else "keras" if device != "cpu" else "onnx"
    return runtime


def _torch_runner(model: keras.Model, device: str | None, half: bool, threads: int | None):
    from app.runtime.torch_runner import TorchRunner  # imports torch: only when asked for

    return TorchRunner(model, device=device or keras_device(), precision="float16" if half else "float32",
                       threads=threads)


def load_runner(weights: str | Path | None = None, runtime: str = "auto", threads: int | None = None,
                device: str | None = None, half: bool = False):
    """The runner for converted weights (a .weights.h5 with its JSON; None: the newest in weights/).

    device and half as runner_from_model.

    For ONNX Runtime the exported graph is cached as weights/<name>.onnx, keyed by the sha256 of the
    weights file and its JSON: a cache hit skips building the Keras model altogether, a changed
    file re-exports. Raises MissingWeightsError / WeightsError as app.weights.load_pose_model does.
    """
    from app.weights import default_weights_path, load_pose_model

    runtime = resolve_runtime(runtime, device)
    path = Path(weights) if weights is not None else default_weights_path()
    if runtime == "onnx" and path is not None and path.is_file():
        cache, key = onnx_cache_path(path), weights_cache_key(path)
        runner = cached_runner(cache, key, threads)
        if runner is not None:
            return runner
    model = load_pose_model(path)  # MissingWeightsError when path is None or absent
    if runtime == "torch":
        return _torch_runner(model, device, half, threads)
    if runtime == "keras":
        return KerasRunner(model, half=half)
    # Here the weights loaded, so path is a file and cache and key are set above.
    proto = export_onnx(model, metadata={CACHE_KEY_FIELD: key})
    try:
        save_atomically(proto, cache)
    except OSError as error:
        # A read-only weights folder costs an export per start, not a failure.
        warnings.warn(f"cannot cache the ONNX graph at {cache} ({error}); exporting it on every start")
        return OnnxRunner(proto.SerializeToString(), threads=threads)
    return OnnxRunner(cache, threads=threads)
