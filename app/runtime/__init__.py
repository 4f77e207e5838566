"""Pose model runners: Keras; ONNX Runtime or OpenVINO on CPUs (the fast paths where there is no GPU);
and torch (one frozen graph, CUDA graphs on a GPU: the fast path where there is one).

A runner is a callable `runner(batch) -> heatmaps`:
    batch     (N, H, W, 3) float32, RGB, ImageNet-normalised (H x W = 256 x 192 for SimpleBaseline)
    heatmaps  (N, h, w, K) float32 numpy, NHWC (h x w = 64 x 48)
with `.input_size` (H, W), `.num_joints` K, `.name`, for the start-up line `.engine`, `.device` and
`.precision`, and from load_runner / runner_from_model `.notes`: lines for the user (what --runtime
auto picked, a precision that was not honoured, a fallback), to print once at start-up.

    load_runner(weights=None, runtime="auto", device=None, precision="auto")   # the product
    runner_from_model(model, runtime="onnx", precision="auto")  # any Keras model (tests, benchmarks)

"auto" picks TorchRunner on a CUDA GPU and KerasRunner on another GPU (Apple's MPS) (the device
app.device chose, or, without one, where the Keras backend runs). On CUDA, TorchRunner is the
fastest candidate by construction: the same cuDNN kernels Keras' torch backend calls, replayed as one
CUDA graph per batch, with none of Keras' ~141,000 Python calls per forward (benchmarks/gpu_check.py
times both on the GPU, table 1, to verify it there). On a CPU it picks OpenVINO when it is installed
and not slower than ONNX Runtime for this network: load_runner times both once per weights and
machine (two or three seconds at the first start) and keeps the timings beside the weights
(weights/<name>.cpu-speed.json); runner_from_model takes OpenVINO when installed
(`python -m benchmarks.model_bench` measured it faster for both networks, docs/benchmarks.md). Both
CPU runtimes beat Keras' compiled predict and TorchRunner on a CPU.

precision: "auto" | "f32" | "bf16" | "f16" (or float32, bfloat16, float16); half=True is f16.
On a CPU, app.runtime.precision decides what runs (auto: float32; bf16/f16 only where the CPU has
the instructions, and bf16 only through OpenVINO or TorchRunner).

The ONNX graph comes from `app.onnx_export.export_onnx` (hand-written; that module says why).
load_runner caches the exported graph beside the weights (weights/<name>.onnx), OpenVINO's compiled
model beside it (weights/<name>.openvino-<precision>.blob), and redoes them when the weights change.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from app.runtime.common import gpu_visible, keras_device, physical_cores  # noqa: F401 (the package's API)
from app.runtime.onnx_runner import (  # noqa: F401
    CACHE_KEY_FIELD, OnnxRunner, cached_runner, onnx_cache_path, save_atomically, weights_cache_key,
)
from app.runtime.openvino_runner import (  # noqa: F401
    TIMING_METHOD, OpenVinoRunner, load_cached, openvino_cache_key, openvino_cache_path, openvino_version, read_speed,
    save_cached, speed_path, time_calls, timing_clock, write_speed,
)
from app.runtime.precision import (  # noqa: F401
    PRECISIONS, bf16_hint, cpu_flags, cpu_precision, machine_signature, native_precisions, parse_precision,
    pick_cpu_runtime, requested_precision,
)

if TYPE_CHECKING:
    import keras

    from app.runtime.keras_runner import KerasRunner

RUNTIMES = ("auto", "keras", "onnx", "openvino", "torch")


def __getattr__(name: str):
    """`from app.runtime import KerasRunner` (or half_precision, export_onnx) imports Keras then, not
    with the package: Keras with its TensorFlow backend takes 3 s to import, and a start whose
    exported graph is cached runs ONNX Runtime or OpenVINO without it (docs/benchmarks.md, start-up)."""
    if name in ("KerasRunner", "half_precision"):
        from app.runtime import keras_runner

        return getattr(keras_runner, name)
    if name == "export_onnx":
        from app.onnx_export import export_onnx

        return export_onnx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def runner_from_model(model: keras.Model, runtime: str = "auto", threads: int | None = None,
                      device: str | None = None, half: bool = False, precision: str = "auto"):
    """A runner over an in-memory Keras model; "onnx" and "openvino" export it afresh (no cache).

    runtime: "auto" (torch on CUDA, Keras on MPS; OpenVINO, else ONNX Runtime, on a CPU), "keras",
    "onnx", "openvino" or "torch". device: where app.device put the pose model ("cpu", "cuda:N",
    "mps"); None asks the Keras backend. precision / half: see the module docstring (Keras runs what
    it is asked; TorchRunner float16 on a CPU falls back to float32 with a note).
    """
    from app.onnx_export import export_onnx

    requested = requested_precision(precision, half)
    runtime = resolve_runtime(runtime, device)
    if runtime == "torch":
        return _torch_runner(model, device, requested, threads)
    if runtime == "keras":
        return _keras_runner(model, requested)
    return _cpu_runner(_Graph(export_onnx(model).SerializeToString()), runtime, requested, threads, cpu_flags())


def resolve_runtime(runtime: str, device: str | None = None) -> str:
    """"auto" -> "torch" on CUDA, "keras" on another GPU (MPS), else "openvino" when it is installed,
    else "onnx"; the others unchanged (load_runner then checks that OpenVINO is not slower for the
    network at hand).

    device: the pose model's device as app.device chose it ("cpu" -> a CPU runtime even when the
    backend could reach a GPU: the user asked for the CPU); None: whether the Keras backend runs on a GPU.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "auto":
        device = keras_device() if device is None else device
        if device.startswith("cuda"):
            return "torch"
        if device != "cpu":
            return "keras"
        return "openvino" if openvino_version() is not None else "onnx"
    return runtime


def _torch_runner(model: keras.Model, device: str | None, requested: str, threads: int | None):
    from app.runtime.torch_runner import TorchRunner  # imports torch: only when asked for

    runner = TorchRunner(model, device=device or keras_device(),
                         precision="float32" if requested == "auto" else requested, threads=threads)
    runner.notes = [f"note: {runner.note}"] if runner.note else []  # e.g. float16 asked on a CPU
    return runner


def load_runner(weights: str | Path | None = None, runtime: str = "auto", threads: int | None = None,
                device: str | None = None, half: bool = False, precision: str = "auto"):
    """The runner for converted weights (a .weights.h5 with its JSON; None: the newest in weights/).

    device, half and precision as runner_from_model.

    For the CPU runtimes the exported graph is cached as weights/<name>.onnx, keyed by the sha256 of
    the weights file and its JSON, and OpenVINO's compiled model as weights/<name>.openvino-<p>.blob
    (the same key plus OpenVINO's version, the precision, the CPU's flags and the threads): a cache
    hit skips building the Keras model altogether (with `device` given, Keras is not even imported),
    a changed file redoes it, a damaged one is rebuilt. Raises MissingWeightsError / WeightsError as
    app.weights.load_pose_model does.
    """
    from app.weights import default_weights_path, load_pose_model

    requested = requested_precision(precision, half)
    asked = runtime
    runtime = resolve_runtime(runtime, device)
    path = Path(weights) if weights is not None else default_weights_path()
    if runtime in ("keras", "torch") or path is None or not path.is_file():
        model = load_pose_model(path)  # MissingWeightsError when path is None or absent
        if runtime == "torch":
            return _torch_runner(model, device, requested, threads)
        return _keras_runner(model, requested)  # (only "keras" gets here: the file exists)
    threads = threads or physical_cores()
    cache, key = onnx_cache_path(path), weights_cache_key(path)
    graph = _GraphCache(path, cache, key, load_pose_model, threads)
    flags = cpu_flags()
    if asked != "auto" or runtime != "openvino":
        runner = _cpu_runner(graph, runtime, requested, threads, flags, weights_key=key, onnx_cache=cache)
        # The bf16 word with the speed-up an earlier --runtime auto start measured here, if one did.
        ms = read_speed(speed_path(cache), _speed_key(key, flags, threads)) or {}
        hint = bf16_hint(flags, runner.precision, ms.get("openvino-float32"), ms.get("openvino-bfloat16"))
        if hint and ms:
            runner.notes.append(hint)
        return runner
    return _auto_cpu_runner(graph, requested, threads, flags, key, cache)


def _keras_runner(model: keras.Model, requested: str) -> KerasRunner:
    from app.runtime.keras_runner import KerasRunner

    precision, note = ("float32" if requested == "auto" else requested), ""
    if precision != "float32" and keras_device() == "cpu":
        # As on the other CPU runtimes: a precision this CPU would only emulate is slower than
        # float32, not faster, so it runs float32 and says so.
        precision, note = cpu_precision(requested, cpu_flags(), "keras")
    runner = KerasRunner(model, precision=precision)
    runner.notes = [note] if note else []
    return runner


class _Graph:
    """An exported graph held in memory (runner_from_model): `.source()` -> its bytes."""

    def __init__(self, graph: bytes):
        self.graph, self.onnx_runner = graph, None

    def source(self) -> bytes:
        return self.graph


class _GraphCache:
    """The ONNX graph for weights at `path`, from weights/<name>.onnx when its key matches, else
    exported from the Keras model (built only then) and cached; `.source()` -> a path or bytes."""

    def __init__(self, path: Path, cache: Path, key: str, load_model, threads: int):
        self.path, self.cache, self.key, self.load_model, self.threads = path, cache, key, load_model, threads
        self._source = None
        self.onnx_runner = None  # the session that checked the cache, reused when ONNX Runtime runs

    def source(self):
        if self._source is None:
            runner = cached_runner(self.cache, self.key, self.threads)
            if runner is not None:
                self._source, self.onnx_runner = self.cache, runner
            else:
                self._source = self._export()
        return self._source

    def _export(self):
        from app.onnx_export import export_onnx  # imports Keras: only on a cache miss

        proto = export_onnx(self.load_model(self.path), metadata={CACHE_KEY_FIELD: self.key})
        try:
            save_atomically(proto, self.cache)
        except OSError as error:
            # A read-only weights folder costs an export per start, not a failure.
            warnings.warn(f"cannot cache the ONNX graph at {self.cache} ({error}); exporting it on every start")
            return proto.SerializeToString()
        return self.cache


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1][:160] if lines else type(error).__name__  # OpenVINO puts its reason last


def _cpu_runner(graph, runtime: str, requested: str, threads: int | None, flags, weights_key: str | None = None,
                onnx_cache: Path | None = None):
    """An OpenVinoRunner or OnnxRunner over `graph` (a _Graph or _GraphCache), with `.notes`.

    OpenVINO missing or failing to compile: one note, and ONNX Runtime runs (float32). weights_key and
    onnx_cache (load_runner): cache OpenVINO's compiled model beside the ONNX graph.
    """
    notes = []
    if runtime == "openvino":
        runner, note = _openvino_runner(graph.source, requested, threads, flags, weights_key, onnx_cache)
        if runner is not None:
            runner.notes = [note] if note else []
            return runner
        notes.append(note)
    precision, note = cpu_precision(requested, flags, "onnx")
    if note and not notes:
        notes.append(note)
    runner = graph.onnx_runner or OnnxRunner(graph.source(), threads=threads)
    runner.notes = notes
    return runner


def _openvino_runner(source, requested: str, threads: int | None, flags, weights_key: str | None,
                     onnx_cache: Path | None) -> tuple["OpenVinoRunner | None", str]:
    """(runner, note), or (None, why not) when OpenVINO is missing or cannot compile the graph."""
    if openvino_version() is None:
        return None, ("OpenVINO is not installed (pip install -r requirements.txt installs it): "
                      "running ONNX Runtime, float32, instead")
    precision, note = cpu_precision(requested, flags, "openvino")
    threads = threads or physical_cores()
    cache = ov_key = None
    if weights_key is not None and onnx_cache is not None:
        cache = openvino_cache_path(onnx_cache, precision)
        ov_key = openvino_cache_key(weights_key, precision, machine_signature(flags), threads)
        runner = load_cached(cache, ov_key, precision, threads)
        if runner is not None:
            return runner, note
    try:
        runner = OpenVinoRunner(source(), precision=precision, threads=threads)
    except Exception as error:  # OpenVINO raises RuntimeError and others for a graph it cannot compile
        return None, f"OpenVINO cannot compile the pose model ({_first_line(error)}): running ONNX Runtime, float32, instead"
    if cache is not None:
        try:
            save_cached(runner, cache, ov_key)
        except (OSError, RuntimeError) as error:
            warnings.warn(f"cannot cache OpenVINO's compiled model at {cache} ({error}); compiling it on every start")
    return runner, note


def _auto_cpu_runner(graph: _GraphCache, requested: str, threads: int, flags, key: str, cache: Path):
    """--runtime auto on a CPU with OpenVINO installed: OpenVINO unless ONNX Runtime measured faster
    for this network here (float32, batch 1, CPU time a call: openvino_runner.time_calls says why).
    bfloat16/float16 asked for and native: OpenVINO, the one CPU runtime that runs them. The timings
    are kept in weights/<name>.cpu-speed.json."""
    precision, _ = cpu_precision(requested, flags, "openvino")
    ov_runner, note = _openvino_runner(graph.source, requested, threads, flags, key, cache)
    if ov_runner is None:
        runner = _cpu_runner(graph, "onnx", requested, threads, flags)
        runner.notes.insert(0, note)  # why not OpenVINO
        return runner
    record = speed_path(cache)
    speed_key = _speed_key(key, flags, threads)
    ms = read_speed(record, speed_key)
    if ms is None:
        ms = _measure(graph, ov_runner, precision, threads, flags, key, cache)
        try:
            write_speed(record, speed_key, ms)
        except OSError:
            pass  # measured again next start: slower to start, nothing lost
    notes = [note] if note else []
    _, unit = timing_clock()
    if precision == "float32" and pick_cpu_runtime(ms["onnx"], ms["openvino-float32"]) == "onnx":
        runner = graph.onnx_runner or OnnxRunner(graph.source(), threads=threads)
        runner.notes = notes + [f"--runtime auto: ONNX Runtime, {ms['onnx']:.0f} {unit} a call against OpenVINO's "
                                f"{ms['openvino-float32']:.0f} for this network (measured here, {record.name})"]
        return runner
    ov_runner.notes = notes + [f"--runtime auto: OpenVINO, {ms['openvino-float32']:.0f} {unit} a call against ONNX "
                               f"Runtime's {ms['onnx']:.0f} for this network (float32, measured here, {record.name})"]
    hint = bf16_hint(flags, ov_runner.precision, ms["openvino-float32"], ms.get("openvino-bfloat16"))
    if hint:
        ov_runner.notes.append(hint)
    return ov_runner


def _speed_key(key: str, flags, threads: int) -> str:
    """What the timings in weights/<name>.cpu-speed.json hold for: weights, versions, CPU, threads,
    and how they were taken."""
    return openvino_cache_key(key, f"all; {TIMING_METHOD}", machine_signature(flags), threads)


def _measure(graph: _GraphCache, ov_runner: OpenVinoRunner, precision: str, threads: int, flags, key: str,
             cache: Path) -> dict:
    """CPU ms per call at batch 1 of ONNX Runtime and OpenVINO float32 (and bfloat16 where native;
    None for one not native or that does not compile), timed together (time_calls says why)."""
    onnx_runner = graph.onnx_runner or OnnxRunner(graph.source(), threads=threads)
    graph.onnx_runner = onnx_runner
    runners = {"onnx": onnx_runner}
    for name in ("float32", "bfloat16"):
        if name in native_precisions(flags):
            runner = (ov_runner if name == precision
                      else _openvino_runner(graph.source, name, threads, flags, key, cache)[0])
            if runner is not None:
                runners[f"openvino-{name}"] = runner
    return {"onnx": None, "openvino-float32": None, "openvino-bfloat16": None, **time_calls(runners)}
