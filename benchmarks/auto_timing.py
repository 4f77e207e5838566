"""How steady --runtime auto's first-start timings are: the way app.runtime takes them against the way
it took them before, repeated, in one process.

    python -m benchmarks.auto_timing                    # R50, 8 repetitions of each way
    python -m benchmarks.auto_timing --model mobilenetv2 --repetitions 12

--runtime auto times ONNX Runtime and OpenVINO float32 (and bfloat16 where the CPU has it) once, at
the first start, and keeps the result beside the weights: a timing taken in a busy second stays
for good, choosing the slower runtime or printing a wrong bfloat16 speed-up. Each repetition
takes the timings both ways, alternated:
  in a row   the way before: each runner's median of 5 calls after one warm-up, one runner after
             the other (ONNX Runtime, then OpenVINO f32, then bf16)
  in turn    app.runtime.openvino_runner.time_calls: the fastest call of each, the runners called in
             turn after one warm-up call each, for at least 5 rounds and 2 s (at most 40 rounds)
and the table gives, for each way, the wall time it took (what it adds to a first start), every
runner's CPU ms a call over the repetitions (fastest, median, slowest, slowest/fastest), the
bfloat16 speed-up it would print, and how often OpenVINO would be picked. The network has random
weights (the time does not depend on the values), 256 x 192, batch 1, the product's thread count.
"""

import argparse
import statistics
import time

import app  # noqa: F401  (first: keeps triton out, see app/__init__.py)
from benchmarks.machine import cpu_model  # noqa: E402
from benchmarks.model_bench import build_model  # noqa: E402

import numpy as np  # noqa: E402

from app.onnx_export import export_onnx  # noqa: E402
from app.runtime import (  # noqa: E402
    OnnxRunner, OpenVinoRunner, cpu_flags, native_precisions, physical_cores, pick_cpu_runtime, time_calls,
)


def in_a_row(runners: dict, calls: int = 5) -> dict[str, float]:
    """The way before time_calls: per runner, one warm-up call then the median CPU ms of `calls`."""
    ms = {}
    for name, runner in runners.items():
        batch = np.random.default_rng(0).standard_normal((1, *runner.input_size, 3)).astype(np.float32)
        runner(batch)
        times = []
        for _ in range(calls):
            start = time.process_time()
            runner(batch)
            times.append(time.process_time() - start)
        ms[name] = sorted(times)[len(times) // 2] * 1e3
    return ms


def summary(records: list[dict], names: list[str]) -> list[str]:
    """Table rows for one way: each runner's spread, the bf16 speed-up's, OpenVINO's picks."""
    rows = []
    for name in names:
        values = [record[name] for record in records]
        rows.append(f"  {name:<18} {min(values):7.1f} {statistics.median(values):7.1f} {max(values):7.1f} "
                    f"{max(values) / min(values):8.2f}")
    if "openvino-bfloat16" in names:
        factors = [record["openvino-float32"] / record["openvino-bfloat16"] for record in records]
        rows.append(f"  bf16 speed-up printed: {min(factors):.1f}x to {max(factors):.1f}x "
                    f"(median {statistics.median(factors):.1f}x)")
    picks = sum(pick_cpu_runtime(record["onnx"], record["openvino-float32"]) == "openvino" for record in records)
    rows.append(f"  OpenVINO picked in {picks} of {len(records)}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="r50", choices=("r50", "mobilenetv2"))
    parser.add_argument("--repetitions", type=int, default=8)
    args = parser.parse_args(argv)

    threads = physical_cores()
    graph = export_onnx(build_model(args.model)).SerializeToString()
    runners = {"onnx": OnnxRunner(graph, threads=threads)}
    for precision in ("float32", "bfloat16"):
        if precision in native_precisions(cpu_flags()):
            runners[f"openvino-{precision}"] = OpenVinoRunner(graph, precision=precision, threads=threads)
    records = {"in a row": [], "in turn": []}
    seconds = {"in a row": [], "in turn": []}  # wall time each way took: what it adds to a first start
    for repetition in range(args.repetitions):
        ways = [("in a row", in_a_row), ("in turn", time_calls)]
        for way, measure in ways if repetition % 2 == 0 else ways[::-1]:
            start = time.perf_counter()
            records[way].append(measure(runners))
            seconds[way].append(time.perf_counter() - start)
    print(f"{args.model}, batch 1, {threads} threads, {args.repetitions} repetitions; {cpu_model()}")
    print(f"  {'CPU ms a call':<18} {'fastest':>7} {'median':>7} {'slowest':>7} {'slow/fast':>8}")
    for way, way_records in records.items():
        print(f"{way}: {min(seconds[way]):.2f}-{max(seconds[way]):.2f} s of wall time each")
        print("\n".join(summary(way_records, list(runners))))


if __name__ == "__main__":
    main()
