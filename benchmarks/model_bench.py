"""The pose model alone, per person, for every runtime the product offers and the references beside them.

    python -m benchmarks.model_bench --json out/model_bench.json
    python -m benchmarks.model_bench --models r50,mobilenetv2 --no-eager --no-int8
    python -m benchmarks.model_bench --backend-info
    python -m benchmarks.model_bench --models r50,mobilenetv2 --batches 1,4 --no-eager --no-int8 --openvino-only

One process, one machine, the models of --models (default SimpleBaseline-R50; mobilenetv2 is
SimpleBaseline-MobileNetV2, hrnet-w32 / hrnet-w48 are HRNet; all 256 x 192 with random weights: the
arithmetic, and so the time, does not depend on the values). Several models are timed interleaved, round by round, like the
runtimes. At batch 1, 4 and 8 it times, for each model:
  KerasRunner        product: Keras' compiled predict (app.runtime, chosen on a GPU)
  OnnxRunner         product: ONNX Runtime over app.runtime's exported graph (chosen on a CPU)
  TorchRunner        product: the model rebuilt as one frozen torch graph (--runtime torch; chosen
                     on CUDA, where it replays CUDA graphs: benchmarks/gpu_check.py times it there)
  OnnxRunner, spinning  reference: the same with ONNX Runtime's busy-waiting worker threads
  onnxruntime default  reference: a default InferenceSession on the same graph
  keras eager        reference: model(x), layer by layer
  ORT int8 static    speed only, not offered: the same graph quantized by ONNX Runtime's tool
  OpenVinoRunner f32   product: OpenVINO over the same graph, float32 (--runtime auto's pick on a CPU
                     when not slower than OnnxRunner; issue 18)
  OpenVinoRunner bf16  product: the same in bfloat16 (--precision bf16), where the CPU has avx512_bf16
                     or amx_bf16; where it has not, "(emulated)" marks a row the product refuses to run
and a float32 matrix-product peak (numpy matmul GFLOP/s) with the per-person floor it implies for
the model's multiply-adds, counted from its layers. Each runtime is warmed up, then called in
rounds, one call per runtime per round (each after a short pause, see SETTLE_S), so a load change
on a shared CPU hits all of them alike; the table gives the median and the fastest call, and the
Python function calls one call makes (sys.setprofile): the host work that does not shrink with a
faster device (on a CPU the whole call is host time).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import app  # noqa: F401  (first: keeps triton out, see app/__init__.py)
from benchmarks.python_calls import count_python_calls  # noqa: E402
from benchmarks.machine import cpu_model  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from app.onnx_export import export_onnx  # noqa: E402
from app.runtime import KerasRunner, OnnxRunner, physical_cores  # noqa: E402
from app.runtime.torch_runner import TorchRunner  # noqa: E402

BATCH_SIZES = (1, 4, 8)
MODELS = ("r50", "mobilenetv2", "hrnet-w32", "hrnet-w48")


def build_model(name: str, input_size: tuple[int, int] = (256, 192)) -> keras.Model:
    """A pose network with random weights: "r50" (SimpleBaseline-ResNet-50), "mobilenetv2"
    (SimpleBaseline-MobileNetV2), "hrnet-w32" or "hrnet-w48"."""
    keras.utils.set_random_seed(0)
    if name == "r50":
        from models.simple_baseline import build_simple_baseline

        return build_simple_baseline(depth=50, num_joints=17, input_size=input_size)
    if name == "mobilenetv2":
        from models.mobilenet_v2 import build_pose_mobilenet_v2

        return build_pose_mobilenet_v2(num_joints=17, input_size=input_size)
    if name in ("hrnet-w32", "hrnet-w48"):
        from models.hrnet import build_hrnet

        return build_hrnet(width=int(name.removeprefix("hrnet-w")), num_joints=17, input_size=input_size)
    raise ValueError(f"model must be one of {MODELS}, got {name!r}")


def machine_info() -> dict:
    """CPU model, cores and library versions: what a timing means nothing without."""
    import onnxruntime

    info = {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
    return info


def backend_info() -> str:
    """One line naming the Keras backend and the devices it sees."""
    from app.runtime import gpu_visible

    return (f"keras {keras.__version__} backend: {keras.backend.backend()}, "
            f"GPU visible: {'yes' if gpu_visible() else 'no'}")


def count_multiply_adds(model: keras.Model) -> int:
    """Multiply-adds of one forward pass for one image: convolutions and transposed convolutions.

    Conv2D: output pixels x kernel area x input channels / groups x filters. DepthwiseConv2D: output
    pixels x kernel area x output channels. Conv2DTranspose: every input pixel scatters kernel area x
    filters products per input channel. BatchNorm, ReLU, Add and pooling add under 1 % (ResNet) to
    3 % (MobileNetV2) and are left out, as papers count FLOPs.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            _, height, width, channels = layer.output.shape
            kh, kw = layer.kernel_size
            total += height * width * kh * kw * channels
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            _, height, width, channels = layer.input.shape
            kh, kw = layer.kernel_size
            total += height * width * kh * kw * channels * layer.filters
        elif isinstance(layer, keras.layers.Conv2D):
            _, height, width, _ = layer.output.shape
            kh, kw = layer.kernel_size
            channels = layer.input.shape[-1] // layer.groups
            total += height * width * kh * kw * channels * layer.filters
    return int(total)


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """float32 GFLOP/s of numpy's matmul (the BLAS it ships) on size x size matrices: the machine's
    practical peak for dense float32 arithmetic, on all the threads the BLAS uses."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b  # warm-up: threads start, pages fault in
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def _eager(model: keras.Model):
    def run(batch):
        return keras.ops.convert_to_numpy(model(batch, training=False))

    return run


def _onnx_default_session(graph: bytes):
    """ONNX Runtime as a user would call it with no tuning: default SessionOptions."""
    import onnxruntime as ort

    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name

    def run(batch):
        return session.run([output_name], {input_name: batch})[0]

    return run


# Pause before each timed call. ONNX Runtime's and TensorFlow's worker threads busy-wait for a
# while after a call; interleaved without a pause, the runtime timed next shares the cores with the
# previous one's spinning threads. Measured here: two default ONNX Runtime sessions on the same graph,
# alternated at batch 1, took 114 and 126 ms per call; with this pause 68 and 71 ms, as each alone.
SETTLE_S = 0.05


def onnx_int8_runner(graph: bytes, input_shape: tuple[int, int], threads: int | None):
    """The same graph quantized to int8 by ONNX Runtime's own tool (static QDQ: int8 weights per
    channel, uint8 activations), run like OnnxRunner. Speed only: its scales are calibrated on random
    inputs of a random-weight model, so its outputs say nothing about a trained model's accuracy,
    and the product does not offer it until that cost is measured (issue 5)."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = onnx.load_from_string(graph).graph.input[0].name
    rng = np.random.default_rng(1)

    class RandomBatches(CalibrationDataReader):
        def __init__(self, count: int = 8):
            self.left = count

        def get_next(self):
            if self.left == 0:
                return None
            self.left -= 1
            return {input_name: rng.standard_normal((1, *input_shape, 3)).astype(np.float32)}

    with tempfile.TemporaryDirectory() as tmp:
        source, prepared, quantized = (Path(tmp) / name for name in ("f32.onnx", "pre.onnx", "int8.onnx"))
        source.write_bytes(graph)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(quantized), RandomBatches(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return OnnxRunner(quantized.read_bytes(), threads=threads)


def time_rounds(runners: dict, batch: np.ndarray, warmup: int, repeats: int, cpu: dict | None = None) -> dict:
    """{name: [seconds per call]}: `warmup` untimed calls each, then `repeats` rounds of one call each.

    cpu, when given, is filled with {name: [CPU seconds of this process, all threads, per call]}:
    unlike the wall time it does not grow while other processes hold the cores, so on a shared
    machine it tells what a call costs (CPU ms / threads is the wall time a quiet machine would
    give with perfect parallel scaling, a lower bound).
    """
    for run in runners.values():
        for _ in range(warmup):
            run(batch)
    times = {name: [] for name in runners}
    if cpu is not None:
        cpu.update({name: [] for name in runners})
    for _ in range(repeats):
        for name, run in runners.items():
            time.sleep(SETTLE_S)
            start, start_cpu = time.perf_counter(), time.process_time()
            run(batch)
            times[name].append(time.perf_counter() - start)
            if cpu is not None:
                cpu[name].append(time.process_time() - start_cpu)
    return times


def openvino_runners(graph: bytes, threads: int | None) -> dict:
    """{name: runner} of OpenVINO float32 and bfloat16 over `graph` ({} without OpenVINO)."""
    from app.runtime import OpenVinoRunner, cpu_flags, native_precisions, openvino_version

    if openvino_version() is None:
        return {}
    native = native_precisions(cpu_flags())
    return {f"OpenVinoRunner {short}" + ("" if name in native else " (emulated)"):
            OpenVinoRunner(graph, precision=name, threads=threads)
            for short, name in (("f32", "float32"), ("bf16", "bfloat16"))}


def _runners_for(model: keras.Model, threads: int | None, eager: bool, int8: bool,
                 compare_deconv: bool = False, openvino_only: bool = False) -> dict:
    """{runtime name: (runner, offered)} for one model. openvino_only: OnnxRunner, the default
    ONNX Runtime session and OpenVINO only (issue 18's comparison)."""
    keras_runner = KerasRunner(model)
    graph = export_onnx(model).SerializeToString()
    onnx_runner = OnnxRunner(graph, threads=threads)
    runners = {
        f"KerasRunner ({keras_runner.name})": keras_runner,
        f"OnnxRunner ({onnx_runner.threads} threads)": onnx_runner,
        "TorchRunner (torch-cpu)": TorchRunner(model, device="cpu", threads=threads),
        "OnnxRunner, spinning threads": OnnxRunner(graph, threads=threads, spinning=True),
        "onnxruntime default session": _onnx_default_session(graph),
        **openvino_runners(graph, threads),
    }
    if openvino_only:
        runners = {name: run for name, run in runners.items()
                   if name.startswith(("OnnxRunner (", "onnxruntime default", "OpenVinoRunner"))}
        eager = int8 = compare_deconv = False
    if compare_deconv:
        # The exporter's sub-pixel deconvolutions (app.onnx_export._subpixel_deconvolutions) against
        # ONNX's own ConvTranspose, on the same weights.
        runners["OnnxRunner, ConvTranspose head"] = OnnxRunner(
            export_onnx(model, subpixel=False).SerializeToString(), threads=threads)
    if eager:
        runners["keras eager model(x)"] = _eager(model)
    if int8:
        runners["ORT int8 static (not offered)"] = onnx_int8_runner(graph, keras_runner.input_size, threads)
    return {name: (run, name.startswith(("KerasRunner", "OnnxRunner (", "OpenVinoRunner", "TorchRunner"))) for name, run in runners.items()}


def run_model_bench(
    model: keras.Model | None = None,
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
    repeats: int = 7,
    warmup: int = 2,
    threads: int | None = None,
    eager: bool = True,
    int8: bool = True,
    show: bool = True,
    models: list[keras.Model] | None = None,
    compare_deconv: bool = False,
    openvino_only: bool = False,
) -> list[dict]:
    """Time every runtime on `model` (default: SimpleBaseline-R50 256 x 192, random weights), or on
    each of `models` (same input size), interleaved in the same rounds.

    Returns one dict per (model, runtime, batch): model (its Keras name), runtime, offered (True for
    the product's runners), batch, ms_per_batch and ms_per_person (medians), ms_per_person_min
    (fastest call), plus per model one "matmul peak" row with gflops and the implied ms_per_person
    floor. cpu_ms_per_person: the process's median CPU time per person, all threads (time_rounds
    says why). threads: the OnnxRunner's intra-op threads (default: physical cores). int8: also time the
    graph quantized to int8 (speed only, see onnx_int8_runner). compare_deconv: also the graph with
    ONNX ConvTranspose for the head instead of sub-pixel convolutions. show: print the table.
    """
    if models is None:
        models = [model if model is not None else build_model("r50")]
    sizes = {KerasRunner(m).input_size for m in models}
    if len(sizes) != 1:
        raise ValueError(f"models timed together need one input size, got {sorted(sizes)}")
    (height, width), = sizes
    runners, offered, owner = {}, {}, {}
    for m in models:
        for name, (run, is_offered) in _runners_for(m, threads, eager, int8, compare_deconv, openvino_only).items():
            key = f"{m.name} | {name}"
            runners[key], offered[key], owner[key] = run, is_offered, (m.name, name)

    rows = []
    rng = np.random.default_rng(0)
    for batch_size in batch_sizes:
        batch = rng.standard_normal((batch_size, height, width, 3)).astype(np.float32)
        cpu = {}
        timed = time_rounds(runners, batch, warmup, repeats, cpu)
        calls = {key: count_python_calls(lambda: run(batch)) for key, run in runners.items()}
        for key, times in timed.items():
            median = statistics.median(times)
            rows.append({
                "model": owner[key][0], "runtime": owner[key][1], "offered": offered[key], "batch": batch_size,
                "ms_per_batch": round(median * 1e3, 2), "ms_per_person": round(median * 1e3 / batch_size, 2),
                # The fastest call is what the runtime does when nothing else competes for the cores:
                # on a shared machine it moves far less than the median.
                "ms_per_person_min": round(min(times) * 1e3 / batch_size, 2), "repeats": repeats,
                "cpu_ms_per_person": round(statistics.median(cpu[key]) * 1e3 / batch_size, 2),
                "python_calls": calls[key],
            })

    gflops = matmul_gflops()
    for m in models:
        multiply_adds = count_multiply_adds(m)
        rows.append({
            "model": m.name, "runtime": "matmul peak (numpy float32)", "offered": False, "batch": None,
            "gflops": round(gflops, 1), "multiply_adds": multiply_adds,
            "ms_per_person": round(2 * multiply_adds / (gflops * 1e9) * 1e3, 2),
        })
    if show:
        for m in models:
            print_table([row for row in rows if row["model"] == m.name], m.name)
    return rows


def print_auto_choice(rows: list[dict]) -> None:
    """What --runtime auto takes on this CPU for each network (app.runtime.precision.pick_cpu_runtime
    on these medians), and bf16's ratio to ONNX Runtime's default session."""
    from app.runtime import pick_cpu_runtime

    table = {(row["model"], row["runtime"], row["batch"]): row["ms_per_person"] for row in rows if row["batch"]}
    for model, runtime, batch in sorted(k for k in table if k[1].startswith("OnnxRunner (")):
        openvino = table.get((model, "OpenVinoRunner f32", batch))
        default = table[(model, "onnxruntime default session", batch)]
        bf16 = table.get((model, "OpenVinoRunner bf16", batch))
        pick = pick_cpu_runtime(table[(model, runtime, batch)], openvino)
        picked = openvino if pick == "openvino" else table[(model, runtime, batch)]
        print(f"{model} batch {batch}: --runtime auto picks {pick} ({picked / default:.2f}x the default ONNX "
              f"Runtime session)" + (f"; OpenVINO bf16 {bf16 / default:.2f}x" if bf16 else ""))


def print_table(rows: list[dict], model_name: str = "") -> None:
    reference = {row["batch"]: row["ms_per_person"] for row in rows if row["runtime"] == "onnxruntime default session"}
    print(f"\n{model_name}: ms per person (median), x = time / onnxruntime default session at that batch")
    print(f"{'runtime':34s} {'product':>7s} {'batch':>5s} {'ms/batch':>9s} {'ms/person':>9s} {'x':>6s} "
          f"{'min ms/person':>13s} {'CPU ms/person':>13s} {'Python calls':>12s}")
    for row in rows:
        if row["batch"] is None:
            continue
        ratio = row["ms_per_person"] / reference[row["batch"]] if row["batch"] in reference else float("nan")
        print(f"{row['runtime']:34s} {'yes' if row['offered'] else '':>7s} {row['batch']:5d} "
              f"{row['ms_per_batch']:9.1f} {row['ms_per_person']:9.1f} {ratio:6.2f} {row['ms_per_person_min']:13.1f} "
              f"{row.get('cpu_ms_per_person', float('nan')):13.1f} {row.get('python_calls', -1):12d}")
    for row in rows:
        if row["batch"] is None:
            print(f"{row['runtime']}: {row['gflops']:.1f} GFLOP/s -> floor {row['ms_per_person']:.1f} ms per "
                  f"person for {row['multiply_adds'] / 1e9:.2f} G multiply-adds "
                  f"({2 * row['multiply_adds'] / 1e9:.1f} GFLOP)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows and the machine record to this JSON file")
    parser.add_argument("--batches", default=",".join(map(str, BATCH_SIZES)), help="comma-separated batch sizes")
    parser.add_argument("--models", default="r50", help=f"comma-separated, timed side by side: {', '.join(MODELS)}")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, help="OnnxRunner intra-op threads (default: physical cores)")
    parser.add_argument("--no-eager", action="store_true", help="skip model(x), the slowest reference")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 speed-only row")
    parser.add_argument("--compare-deconv", action="store_true",
                        help="also time the graph with ONNX ConvTranspose instead of sub-pixel convolutions")
    parser.add_argument("--openvino-only", action="store_true",
                        help="time OnnxRunner, the default ONNX Runtime session and OpenVINO f32/bf16 only")
    parser.add_argument("--backend-info", action="store_true", help="print the Keras backend line and exit")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)

    print(backend_info())
    if args.backend_info:
        return
    info = machine_info()
    print(f"machine: {info['cpu']}, {info['physical_cores']} physical / {info['logical_cores']} logical cores; "
          f"keras {info['keras']} ({info['keras_backend']}), onnxruntime {info['onnxruntime']}, "
          f"numpy {info['numpy']}; {info['date']}")
    rows = run_model_bench(
        batch_sizes=tuple(int(b) for b in args.batches.split(",")), repeats=args.repeats, warmup=args.warmup,
        threads=args.threads, eager=not args.no_eager, int8=not args.no_int8,
        models=[build_model(name) for name in args.models.split(",")], compare_deconv=args.compare_deconv,
        openvino_only=args.openvino_only,
    )
    print_auto_choice(rows)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"command": "python -m benchmarks.model_bench " + " ".join(argv), "machine": info, "rows": rows}
        path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
