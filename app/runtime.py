"""Pose model runners: Keras, and ONNX Runtime on CPUs (the fast path where there is no GPU).

A runner is a callable `runner(batch) -> heatmaps`:
    batch     (N, H, W, 3) float32, RGB, ImageNet-normalised (H x W = 256 x 192 for SimpleBaseline)
    heatmaps  (N, h, w, K) float32 numpy, NHWC (h x w = 64 x 48)
with `.input_size` (H, W), `.num_joints` K, `.name`, and for the start-up line `.engine`,
`.device` and `.precision`.

    load_runner(weights=None, runtime="auto", device=None, half=False)   # the product
    runner_from_model(model, runtime="onnx")    # any Keras model (tests, benchmarks, random weights)

"auto" picks KerasRunner on a GPU (the device app.device chose, or, without one, whether the Keras
backend runs on a GPU) and OnnxRunner otherwise: on a CPU ONNX Runtime runs SimpleBaseline-R50
about twice as fast as Keras' compiled predict
(`python -m benchmarks.model_bench` times both, side by side, on the machine at hand).

The ONNX graph comes from `app.onnx_export.export_onnx` (hand-written; that module says why).
load_runner caches the exported graph beside the weights (weights/<name>.onnx) and re-exports when
the weights change.
"""

import hashlib
import os
import uuid
import warnings
from pathlib import Path

import keras
import numpy as np

from app.device import backend_sees_gpu
from app.onnx_export import EXPORTER_VERSION, export_onnx, model_io_shape

RUNTIMES = ("auto", "keras", "onnx")

CACHE_KEY_FIELD = "pose_cache_key"


# --- machine -----------------------------------------------------------------------------------------

def physical_cores() -> int:
    """Physical cores this process may run on: the default intra-op thread count.

    Hyper-threads share one core's vector units, so a second thread per core only adds contention
    to convolution kernels. psutil counts the host's cores; a container or taskset may allow fewer,
    so the CPU affinity caps it.
    """
    import psutil  # installed with Ultralytics, which the product needs anyway

    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(psutil.cpu_count(logical=False) or allowed, allowed))


def keras_device() -> str:
    """Where the active Keras backend puts new tensors: "cpu", "cuda:N" or "mps".

    Under torch that is KERAS_TORCH_DEVICE when set before Keras was imported (app.device sets it),
    else Keras' own pick; under TensorFlow and JAX their first GPU when they see one.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        return _torch_device_name(keras.ops.zeros((1,)).device)  # asks Keras itself, not torch's defaults
    return "cuda:0" if backend_sees_gpu(backend) else "cpu"


def _torch_device_name(device) -> str:
    """torch.device -> "cpu", "cuda:N" or "mps"."""
    return f"cuda:{device.index or 0}" if device.type == "cuda" else device.type


def gpu_visible() -> bool:
    """Whether the active Keras backend (tensorflow, jax or torch) runs on a GPU."""
    return keras_device() != "cpu"


# --- runners -----------------------------------------------------------------------------------------

def _check_batch(batch: np.ndarray, input_size: tuple[int, int], name: str) -> np.ndarray:
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if batch.ndim != 4 or batch.shape[1:] != (*input_size, 3):
        raise ValueError(f"{name} expects a (N, {input_size[0]}, {input_size[1]}, 3) batch, got {batch.shape}")
    return batch


class KerasRunner:
    """The Keras model through its compiled predict function, on whatever device its backend uses.

    `predict_on_batch` traces the model once per input signature and reuses the compiled function
    (tf.function / jax.jit); calling `model(x)` instead runs layer by layer, several times slower.
    Under torch it runs under no_grad on the device Keras' torch backend uses (KERAS_TORCH_DEVICE,
    set by app.device): one host-to-device copy of the whole batch in, one copy of the heatmaps out.

    half: run a float16 copy of the model (weights cast once here, activations float16 on the
    device); the heatmaps come back as float32. `.precision` says which.
    """

    def __init__(self, model: keras.Model, half: bool = False):
        self.model = half_precision(model) if half else model
        self.input_size, self.heatmap_size, self.num_joints = model_io_shape(model)
        self.name = f"keras-{keras.backend.backend()}"
        weights = self.model.weights
        if keras.backend.backend() == "torch" and weights:
            self.device = _torch_device_name(weights[0].value.device)  # where this model's weights are
        else:
            self.device = keras_device()
        self.precision = "float16" if half else "float32"
        self.engine = f"Keras {keras.__version__} ({keras.backend.backend()} backend)"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """batch (N, H, W, 3) float32 normalised RGB -> heatmaps (N, h, w, K) float32."""
        batch = _check_batch(batch, self.input_size, self.name)
        if len(batch) == 0:
            return np.zeros((0, *self.heatmap_size, self.num_joints), np.float32)
        return np.asarray(self.model.predict_on_batch(batch), dtype=np.float32)


def half_precision(model: keras.Model) -> keras.Model:
    """A float16 copy of a functional Keras model: every layer rebuilt under the "float16" dtype
    policy (variables and arithmetic float16; BatchNormalization still normalises in float32, as
    Keras does for half inputs), the weights cast from the original. The input is cast to float16
    by the first layer, on the device."""

    def as_float16(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        config["dtype"] = "float16"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=as_float16)
    copy.set_weights(model.get_weights())
    return copy


class OnnxRunner:
    """An ONNX Runtime CPU session over an NHWC-in, NHWC-out graph such as export_onnx writes.

    onnx_model: a path to a .onnx file or its serialized bytes. threads: intra-op threads, default
    physical_cores(). Graph optimisation ALL lets ONNX Runtime fuse Conv+Add+Relu and switch the
    convolutions to its blocked (NCHWc) layout; sequential execution because the graph is a chain,
    so parallel branches would only add scheduling.

    spinning: whether the worker threads busy-wait for work after a call (ONNX Runtime's default).
    Off by default: between model calls the demo runs its reader, detector, drawing and writing
    threads on the same cores, and an idle pool that spins competes with them and with any other
    session in the process (two spinning sessions called in turn took 114-126 ms a call instead of
    68). Alone, a call takes the same time either way; end to end on dancer.avi the two measured
    within noise of each other (`benchmarks/pipeline_bench.py --variants product,product-spinning`).
    """

    def __init__(self, onnx_model: str | Path | bytes, threads: int | None = None, spinning: bool = False):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or physical_cores()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        source = str(onnx_model) if isinstance(onnx_model, Path) else onnx_model
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.threads = options.intra_op_num_threads
        (model_input,), (model_output,) = self.session.get_inputs(), self.session.get_outputs()
        _, height, width, _ = model_input.shape
        _, out_h, out_w, joints = model_output.shape
        self.input_name, self.output_name = model_input.name, model_output.name
        self.input_size, self.heatmap_size, self.num_joints = (height, width), (out_h, out_w), joints
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.name = "onnxruntime-cpu"
        self.device, self.precision = "cpu", "float32"
        self.engine = f"ONNX Runtime {ort.__version__}"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """batch (N, H, W, 3) float32 normalised RGB -> heatmaps (N, h, w, K) float32."""
        batch = _check_batch(batch, self.input_size, self.name)
        if len(batch) == 0:
            return np.zeros((0, *self.heatmap_size, self.num_joints), np.float32)
        return self.session.run([self.output_name], {self.input_name: batch})[0]


def runner_from_model(model: keras.Model, runtime: str = "auto", threads: int | None = None,
                      device: str | None = None, half: bool = False):
    """A runner over an in-memory Keras model; "onnx" exports it afresh (no cache) each call.

    runtime: "auto" (Keras on a GPU, ONNX Runtime otherwise), "keras" or "onnx". device: where
    app.device put the pose model ("cpu", "cuda:N", "mps"); None asks the Keras backend.
    half: float16 for the Keras runner (ONNX Runtime on the CPU stays float32).
    """
    runtime = resolve_runtime(runtime, device)
    if runtime == "keras":
        return KerasRunner(model, half=half)
    return OnnxRunner(export_onnx(model).SerializeToString(), threads=threads)


def resolve_runtime(runtime: str, device: str | None = None) -> str:
    """"auto" -> "keras" on a GPU, else "onnx"; the others unchanged.

    device: the pose model's device as app.device chose it ("cpu" -> "onnx" even when the backend
    could reach a GPU: the user asked for the CPU); None: whether the Keras backend runs on a GPU.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "auto":
        on_gpu = gpu_visible() if device is None else device != "cpu"
        return "keras" if on_gpu else "onnx"
    return runtime


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
        runner = _cached_runner(cache, key, threads)
        if runner is not None:
            return runner
    model = load_pose_model(path)  # MissingWeightsError when path is None or absent
    if runtime == "keras":
        return KerasRunner(model, half=half)
    # Here the weights loaded, so path is a file and cache and key are set above.
    proto = export_onnx(model, metadata={CACHE_KEY_FIELD: key})
    try:
        _save_atomically(proto, cache)
    except OSError as error:
        # A read-only weights folder costs an export per start, not a failure.
        warnings.warn(f"cannot cache the ONNX graph at {cache} ({error}); exporting it on every start")
        return OnnxRunner(proto.SerializeToString(), threads=threads)
    return OnnxRunner(cache, threads=threads)


# --- cache -------------------------------------------------------------------------------------------

def onnx_cache_path(weights_path: str | Path) -> Path:
    """weights/<name>.weights.h5 -> weights/<name>.onnx."""
    weights_path = Path(weights_path)
    return weights_path.with_name(weights_path.name.removesuffix(".weights.h5").removesuffix(".h5") + ".onnx")


def weights_cache_key(weights_path: str | Path) -> str:
    """What a cached graph must have been exported from: this exporter, these weights, this JSON
    (the JSON fixes depth and input size, so it changes the graph as much as the weights do)."""
    from app.weights import sha256_of, sidecar_path

    weights_path = Path(weights_path)
    sidecar = sidecar_path(weights_path)
    sidecar_sha = hashlib.sha256(sidecar.read_bytes()).hexdigest() if sidecar.is_file() else "none"
    return f"exporter {EXPORTER_VERSION}; weights sha256 {sha256_of(weights_path)}; json sha256 {sidecar_sha}"


def _cached_runner(cache: Path, key: str, threads: int | None) -> "OnnxRunner | None":
    """A runner over the cached graph when it exists and was exported from `key`, else None.

    The key lives inside the .onnx (model metadata), so the file and its key are replaced together
    by one rename and can never disagree; the session reads it without a second parse.
    """
    if not cache.is_file():
        return None
    try:
        runner = OnnxRunner(cache, threads=threads)
    except Exception:  # ONNX Runtime raises several types for a damaged file: export again
        return None
    return runner if runner.metadata.get(CACHE_KEY_FIELD) == key else None


def _save_atomically(proto, path: Path) -> None:
    """Write into a hidden temp file beside `path`, then rename: a reader never sees half a graph."""
    import onnx

    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.part")
    try:
        onnx.save_model(proto, temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
