"""OnnxRunner: an ONNX Runtime CPU session, and the exported graph's cache beside the weights."""

import hashlib
from pathlib import Path

import numpy as np

from app.atomic import write_atomically
from app.runtime.common import check_batch, physical_cores

CACHE_KEY_FIELD = "pose_cache_key"


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
        batch = check_batch(batch, self.input_size, self.name)
        if len(batch) == 0:
            return np.zeros((0, *self.heatmap_size, self.num_joints), np.float32)
        return self.session.run([self.output_name], {self.input_name: batch})[0]


# --- cache -------------------------------------------------------------------------------------

# The graph app.onnx_export writes: bump when it changes, so cached .onnx files from older code
# re-export. Kept here rather than in app.onnx_export so that checking the cache does not import
# Keras (3 s at start-up with its TensorFlow backend; a cache hit needs neither).
EXPORTER_VERSION = "3"  # 2: DepthwiseConv2D, ReLU(max_value) (MobileNetV2), sub-pixel deconvolutions; 3: UpSampling2D (HRNet)


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


def cached_runner(cache: Path, key: str, threads: int | None) -> "OnnxRunner | None":
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


def save_atomically(proto, path: Path) -> None:
    """Write into a hidden temp file beside `path`, then rename: a reader never sees half a graph."""
    import onnx

    write_atomically(path, lambda temp: onnx.save_model(proto, temp))
