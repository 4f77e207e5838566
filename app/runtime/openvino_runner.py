"""OpenVinoRunner: the exported ONNX graph compiled by OpenVINO for this CPU, in float32, bfloat16 or
float16, and the compiled model's cache beside the weights.

OpenVINO reads the same graph app.onnx_export writes for ONNX Runtime (NHWC in, NHWC out). On a CPU
with AVX512_BF16 or AMX it runs the convolutions in bfloat16 when asked (and by default, which is
why float32 is always asked for explicitly here): see docs/benchmarks.md, "OpenVINO and bfloat16".

    runner = OpenVinoRunner(path_or_onnx_bytes, precision="bfloat16")
    heatmaps = runner(batch)       # (N, 256, 192, 3) float32 -> (N, 64, 48, K) float32
"""

import io
import json
import sys
import time
from pathlib import Path

import numpy as np

from app.atomic import write_atomically
from app.runtime.common import check_batch, physical_cores

OV_PRECISION = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
CACHE_MAGIC = b"pose-openvino-cache 1\n"  # then one JSON line {"key": ...}, then OpenVINO's blob


def openvino_version() -> str | None:
    """OpenVINO's version ("2026.4.1"), or None when it is not installed or does not import."""
    try:
        import openvino
    except Exception:  # ImportError, or a broken install raising anything while loading its libraries
        return None
    return openvino.__version__.split("-")[0]


def _core():
    import openvino as ov

    return ov.Core()


def compile_config(precision: str, threads: int) -> dict:
    """Latency settings, as OnnxRunner's: one stream (one request at a time: the demo calls the model
    from one thread), `threads` inference threads, no pinning to cores (the demo's reader, detector
    and drawing threads share them), and the inference precision asked for."""
    return {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_NUM_THREADS": threads,
        "ENABLE_CPU_PINNING": False,
        "INFERENCE_PRECISION_HINT": OV_PRECISION[precision],
    }


class OpenVinoRunner:
    """OpenVINO's CPU plugin over an NHWC-in, NHWC-out ONNX graph, or over a compiled blob.

    source: a .onnx path, the graph's serialized bytes, or `compiled` (an ov.CompiledModel, e.g.
    from import_model). precision: "float32", "bfloat16" or "float16" (the caller has checked
    that the CPU runs it natively: app.runtime.precision.cpu_precision). threads: default
    physical_cores(). Raises whatever OpenVINO raises when it cannot read or compile the graph.
    """

    def __init__(self, source=None, precision: str = "float32", threads: int | None = None, compiled=None):
        import openvino as ov

        self.threads = threads or physical_cores()
        if compiled is None:
            core = ov.Core()
            model = core.read_model(str(source)) if isinstance(source, (str, Path)) else _read_bytes(core, source)
            compiled = core.compile_model(model, "CPU", compile_config(precision, self.threads))
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        model_input, model_output = compiled.inputs[0], compiled.outputs[0]
        _, height, width, _ = (dim.get_length() if dim.is_static else None for dim in model_input.partial_shape)
        _, out_h, out_w, joints = (dim.get_length() if dim.is_static else None for dim in model_output.partial_shape)
        self.input_size, self.heatmap_size, self.num_joints = (height, width), (out_h, out_w), joints
        self.name = "openvino-cpu"
        self.device = "cpu"
        self.precision = precision
        self.engine = f"OpenVINO {openvino_version()}"
        self.notes: list[str] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """batch (N, H, W, 3) float32 normalised RGB -> heatmaps (N, h, w, K) float32."""
        batch = check_batch(batch, self.input_size, self.name)
        if len(batch) == 0:
            return np.zeros((0, *self.heatmap_size, self.num_joints), np.float32)
        self.request.infer({0: batch})
        # The request owns its output buffer and overwrites it on the next call: hand out a copy.
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def export(self) -> bytes:
        """The compiled model as OpenVINO serializes it (for this CPU's instruction set)."""
        return self.compiled.export_model().getvalue()


def _read_bytes(core, graph: bytes):
    """An ONNX graph from memory: OpenVINO's ONNX frontend reads a model from bytes."""
    return core.read_model(io.BytesIO(graph))


# --- the compiled model's cache ------------------------------------------------------------------

def openvino_cache_path(onnx_cache: Path, precision: str) -> Path:
    """weights/<name>.onnx -> weights/<name>.openvino-bf16.blob (one file per precision)."""
    return onnx_cache.with_name(f"{onnx_cache.stem}.openvino-{OV_PRECISION[precision]}.blob")


def openvino_cache_key(weights_key: str, precision: str, machine: str, threads: int) -> str:
    """The ONNX cache's key (exporter, weights, JSON) plus what the compiled blob also depends on:
    OpenVINO's version, the precision, this CPU's instruction set and the thread count."""
    return f"{weights_key}; openvino {openvino_version()}; {precision}; {machine}; threads {threads}"


def load_cached(cache: Path, key: str, precision: str, threads: int) -> "OpenVinoRunner | None":
    """A runner over the cached compiled model when it exists and was compiled for `key`, else None:
    a missing, stale, truncated or otherwise damaged file is simply compiled again."""
    try:
        data = cache.read_bytes()
    except OSError:
        return None
    if not data.startswith(CACHE_MAGIC):
        return None
    header_end = data.find(b"\n", len(CACHE_MAGIC))
    try:
        header = json.loads(data[len(CACHE_MAGIC):header_end])
    except ValueError:
        return None
    if header_end < 0 or not isinstance(header, dict) or header.get("key") != key:
        return None
    try:
        # The full configuration again: without the precision hint the CPU plugin imports a float32
        # blob as bfloat16 on a CPU that has it (its default there; measured here).
        compiled = _core().import_model(data[header_end + 1:], "CPU", compile_config(precision, threads))
        return OpenVinoRunner(compiled=compiled, precision=precision, threads=threads)
    except Exception:  # OpenVINO raises RuntimeError (and others) for a damaged blob: compile again
        return None


def save_cached(runner: OpenVinoRunner, cache: Path, key: str) -> None:
    """The compiled model with its key, written atomically (app.atomic)."""
    header = CACHE_MAGIC + json.dumps({"key": key}).encode() + b"\n"
    blob = runner.export()
    write_atomically(cache, lambda temp: temp.write_bytes(header + blob))


# --- timing for --runtime auto and the bf16 hint ----------------------------------------------------

def timing_clock(platform: str = sys.platform) -> tuple[object, str]:
    """(clock, unit) the calls are timed with: the process's CPU time ("CPU ms"), except on Windows,
    which counts it in scheduler ticks (GetProcessTimes: about 15.6 ms, as long as a whole call of
    a small network), so there wall time ("ms")."""
    return (time.perf_counter, "ms") if platform == "win32" else (time.process_time, "CPU ms")


# How the timings below are taken (part of their record's key: a record taken another way is taken again).
TIMING_METHOD = ("fastest call of 5-40 over 2 s, runners in turn"
                 + ("" if timing_clock()[1] == "CPU ms" else " (wall time)"))


def time_calls(runners: dict, rounds: int = 5, min_seconds: float = 2.0, max_rounds: int = 40,
               batch_size: int = 1, clock=None, wall=time.perf_counter) -> dict[str, float]:
    """{name: CPU ms one call of that runner costs this process (all its threads)}: the fastest call
    of each, the runners called in turn (a, b, c, a, b, c, ...) after one warm-up call each, on one
    random batch (batch_size, H, W, 3) float32; at least `rounds` rounds, and more until min_seconds
    of wall time have gone (at most max_rounds). Two or three seconds at the first start, once per
    weights and machine (load_runner keeps the result). clock, wall: CPU and wall seconds (tests
    pass their own); clock None: timing_clock()'s (wall time on Windows).

    CPU time, not wall time: the demo runs its reader, detector and drawing threads on the same
    cores as the model, so what a call leaves to them decides the frame rate. The fastest call, in
    turn, for two seconds, because CPU time moves too on a shared machine: the median of five calls
    in a row, one runner after the other, spread by up to 1.9x over repeated timings here and once
    recorded bfloat16 at 1.0x float32 where it runs 1.9x (docs/benchmarks.md, "--runtime auto's
    timings": 1.07-1.24x this way). A busy moment only adds time, so the fastest call is the least
    disturbed one; in turn, a busy second falls on every runner alike; two seconds outlast most such
    moments, also for a small network.
    """
    clock = clock or timing_clock()[0]
    batches = {name: np.random.default_rng(0).standard_normal((batch_size, *runner.input_size, 3)).astype(np.float32)
               for name, runner in runners.items()}
    for name, runner in runners.items():
        runner(batches[name])
    fastest = {name: float("inf") for name in runners}
    began, done = wall(), 0
    while done < rounds or (wall() - began < min_seconds and done < max_rounds):
        for name, runner in runners.items():
            start = clock()
            runner(batches[name])
            fastest[name] = min(fastest[name], clock() - start)
        done += 1
    return {name: seconds * 1e3 for name, seconds in fastest.items()}


def speed_path(onnx_cache: Path) -> Path:
    """weights/<name>.onnx -> weights/<name>.cpu-speed.json: the timings --runtime auto chose by."""
    return onnx_cache.with_name(f"{onnx_cache.stem}.cpu-speed.json")


def read_speed(path: Path, key: str) -> dict | None:
    """{"onnx": ms, "openvino-float32": ms, "openvino-bfloat16": ms or null} (CPU ms a call, time_calls)
    measured for `key`, or None."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key or not isinstance(record.get("ms"), dict):
        return None
    return record["ms"]


def write_speed(path: Path, key: str, ms: dict) -> None:
    write_atomically(path, lambda temp: temp.write_text(json.dumps({"key": key, "ms": ms}, indent=1) + "\n"))
