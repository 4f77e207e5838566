"""Start-up: seconds from `python run_demo.py` to the end of a one-frame run, side by side.

    python -m benchmarks.startup                       # this tree
    python -m benchmarks.startup --compare a35833c     # and a git revision, alternated

Every start is a fresh process: `run_demo.py --headless --max-frames 1` on the dancer video with the
shared LiteRT detector and an R50 256 x 192 pose model, the product's default network. Its weights
are random (made once in out/startup/): a start does not depend on what the weights learnt, only on
their size and format. Its exported ONNX graph, OpenVINO's compiled model and the CPU timings are
cached beside them, as they are for a user at every start after the first: one start of each tree
fills them before anything is timed. Prints wall seconds and the process's CPU seconds (user +
system), the median of --repeats alternated starts each.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.host_bench import ASSETS, ROOT, revision_tree
from benchmarks.machine import cpu_model

CACHE = ROOT / "out" / "startup"


def random_weights() -> Path:
    """out/startup/r50.weights.h5 with its JSON (untrained, said so), made once. The weights appear
    last and whole (renamed into place), so a run stopped half way is made again by the next."""
    path = CACHE / "r50.weights.h5"
    if not path.exists():
        from app.weights import sidecar_path  # Keras only here, in this process: the starts are children
        from models.simple_baseline import build_simple_baseline

        CACHE.mkdir(parents=True, exist_ok=True)
        sidecar_path(path).write_text(json.dumps({"source": "random weights (benchmark only)", "trained": False,
                                                  "depth": 50, "num_joints": 17, "input_size": [256, 192]}))
        partial = CACHE / "r50.partial.weights.h5"  # Keras wants the .weights.h5 suffix
        build_simple_baseline(depth=50, num_joints=17, input_size=(256, 192)).save_weights(partial)
        partial.replace(path)
    return path


def one_start(tree: Path, weights: Path, args) -> tuple[float, float]:
    """(wall s, CPU s) of one run_demo.py start that processes one frame."""
    command = [sys.executable, str(tree / "run_demo.py"), "--headless", "--no-progress", "--source", args.source,
               "--weights", str(weights), "--detector", args.detector, "--max-frames", "1",
               "--json", str(CACHE / "start.json"), "--overwrite"]
    env = dict(os.environ, YOLO_OFFLINE="1")
    env.pop("DISPLAY", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    completed = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        sys.exit(f"{tree}: run_demo.py failed: {completed.stderr.strip().splitlines()[-1:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", help="a git revision to time side by side (e.g. a35833c)")
    parser.add_argument("--repeats", type=int, default=5, help="starts per tree, alternated")
    parser.add_argument("--source", default=str(ASSETS / "videos" / "dancer.avi"))
    parser.add_argument("--detector", default=str(ASSETS / "detector" / "yolov8n_int8.tflite"))
    args = parser.parse_args(argv)

    weights = random_weights()
    trees = {"this tree": ROOT}
    if args.compare:
        trees[args.compare] = revision_tree(args.compare)
    for tree in trees.values():
        one_start(tree, weights, args)  # fills the caches beside the weights; not timed
    times = {name: [] for name in trees}
    for _ in range(args.repeats):
        for name, tree in trees.items():
            times[name].append(one_start(tree, weights, args))
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, load average {load}; "
          f"median of {args.repeats} alternated starts; R50 256x192, cached graph")
    print(f"{'tree':<12} {'wall s':>7} {'cpu s':>7}")
    for name, rows in times.items():
        wall = statistics.median(row[0] for row in rows)
        cpu = statistics.median(row[1] for row in rows)
        print(f"{name:<12} {wall:7.2f} {cpu:7.2f}")
    print(json.dumps({name: rows for name, rows in times.items()}))


if __name__ == "__main__":
    main()
