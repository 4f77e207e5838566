"""How to run the pose model through torch with a host cost that does not grow with the layers:
the candidates of issue 17 side by side, on this machine's CPU, under KERAS_BACKEND=torch.

    KERAS_BACKEND=torch python -m benchmarks.torch_candidates --repeats 5 --json out/torch_candidates.json
    KERAS_BACKEND=torch python -m benchmarks.torch_candidates --threads 1   # steadier on a loaded machine

Candidates (SimpleBaseline-R50, random weights; the arithmetic, and so the time, does not depend
on the values):
  keras eager          KerasRunner on the torch backend: predict_on_batch, layer by layer (main today)
  keras trace+freeze   torch.jit.trace of the Keras model itself (torch backend) + torch.jit.freeze
  rebuild eager        app.runtime.torch_runner.build_torch_module, called as it is
  rebuild export       torch.export of the rebuilt module, run as its .module()
  rebuild trace+freeze TorchRunner on a CPU (the choice): the rebuilt module traced and frozen
  onnxruntime          OnnxRunner, the CPU product path, for scale
For each: Python function calls per call (sys.setprofile 'call' events, one batch-1 call), and
wall and process-CPU ms per call at 256 x 192 and at 32 x 32 (1/48 of the arithmetic: the host
floor shows there), batch 1, interleaved round by round so a load change hits all alike.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import app  # noqa: F401  (first: keeps triton out)

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("KERAS_TORCH_DEVICE", "cpu")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.machine import cpu_model  # noqa: E402
from benchmarks.python_calls import count_python_calls  # noqa: E402


def candidates(model, threads: int | None = None) -> dict:
    """{name: call(batch numpy) -> heatmaps}; a candidate that fails to build is reported, not timed."""
    import torch

    from app.runtime import KerasRunner, runner_from_model
    from app.runtime.torch_runner import TorchRunner, build_torch_module

    height, width = model.input_shape[1:3]
    example = torch.zeros((1, height, width, 3))
    out = {"keras eager": KerasRunner(model)}
    try:
        with torch.no_grad():
            traced = torch.jit.freeze(torch.jit.trace(model, example, check_trace=False).eval())
        out["keras trace+freeze"] = lambda b: traced(torch.from_numpy(b)).numpy()
    except Exception as error:  # noqa: BLE001  (a candidate that cannot be built is a result)
        out["keras trace+freeze"] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
    module = build_torch_module(model)
    out["rebuild eager"] = lambda b: module(torch.from_numpy(b)).numpy()
    try:
        exported = torch.export.export(module, (example,)).module()
        out["rebuild export"] = lambda b: exported(torch.from_numpy(b)).numpy()
    except Exception as error:  # noqa: BLE001
        out["rebuild export"] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
    out["rebuild trace+freeze (TorchRunner)"] = TorchRunner(model, device="cpu", threads=threads)
    out["onnxruntime (OnnxRunner)"] = runner_from_model(model, "onnx", threads=threads)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="256x192,32x32")
    parser.add_argument("--threads", type=int, help="torch and ONNX Runtime intra-op threads (default: theirs)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        # With more runnable threads than cores, a 2-thread OpenMP pool waits at every barrier for a
        # descheduled thread: one thread per runtime keeps the comparison about the runtimes.
        torch.set_num_threads(args.threads)

    from models.simple_baseline import build_simple_baseline

    print(f"machine: {cpu_model()}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
          f"keras {keras.__version__} ({keras.backend.backend()}), threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()}")
    rows = []
    for size in args.sizes.split(","):
        height, width = map(int, size.split("x"))
        keras.utils.set_random_seed(0)
        model = build_simple_baseline(depth=50, num_joints=17, input_size=(height, width))
        runs = candidates(model, args.threads)
        batch = np.random.default_rng(0).standard_normal((1, height, width, 3)).astype(np.float32)
        timed = {name: run for name, run in runs.items() if callable(run)}
        with torch.inference_mode():
            for run in timed.values():
                run(batch), run(batch)
            calls = {name: count_python_calls(lambda: run(batch)) for name, run in timed.items()}
            wall, cpu = {n: [] for n in timed}, {n: [] for n in timed}
            for _ in range(args.repeats):
                for name, run in timed.items():
                    time.sleep(0.05)
                    start, start_cpu = time.perf_counter(), time.process_time()
                    run(batch)
                    wall[name].append(1e3 * (time.perf_counter() - start))
                    cpu[name].append(1e3 * (time.process_time() - start_cpu))
        print(f"\nSimpleBaseline-R50 {height}x{width}, batch 1 (load average {os.getloadavg()[0]:.1f})")
        print(f"{'candidate':38s} {'Python calls':>12s} {'wall ms med':>11s} {'wall ms min':>11s} {'CPU ms med':>10s}")
        for name, run in runs.items():
            if not callable(run):
                print(f"{name:38s} {run}")
                rows.append({"size": size, "candidate": name, "result": run})
                continue
            row = {"size": size, "candidate": name, "python_calls": calls[name],
                   "wall_ms_median": round(statistics.median(wall[name]), 1), "wall_ms_min": round(min(wall[name]), 1),
                   "cpu_ms_median": round(statistics.median(cpu[name]), 1)}
            rows.append(row)
            print(f"{name:38s} {row['python_calls']:12d} {row['wall_ms_median']:11.1f} {row['wall_ms_min']:11.1f} "
                  f"{row['cpu_ms_median']:10.1f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "cpu": cpu_model(), "load": os.getloadavg()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
