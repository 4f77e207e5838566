"""The pose model on a GPU: Keras under JAX or PyTorch (TensorFlow need not be installed), float32
and half precision, batch 1 to 32, time per person.

    KERAS_BACKEND=jax   python -m benchmarks.gpu_bench --json out/gpu_jax.json
    KERAS_BACKEND=torch python -m benchmarks.gpu_bench --dtypes float32,bfloat16

Without KERAS_BACKEND it picks the backend as run_demo.py does (app.device: torch on a GPU).
`python -m benchmarks.gpu_check` is the whole GPU check (end to end, keypoints, crops).

It uses the product's runner (app.runtime.KerasRunner, what `--runtime auto` picks when the backend
sees a GPU) on SimpleBaseline-R50 256 x 192 with random weights (the time does not depend on them),
and checks each half-precision model against float32 on the same input (max |diff| of the heatmaps
and the share of joints whose peak moves), so a speed-up is never reported without its cost.
"""

import argparse
import json
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import app  # noqa: F401  (first: keeps triton out, see app/__init__.py)
from app.device import choose_devices  # noqa: E402

# As run_demo.py: on a GPU torch sees, Keras' torch backend unless KERAS_BACKEND says otherwise.
_CHOICE = choose_devices("auto")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from app.runtime import KerasRunner, gpu_visible  # noqa: E402
from models.simple_baseline import build_simple_baseline  # noqa: E402


def time_runner(runner, batch: np.ndarray, warmup: int, repeats: int) -> float:
    """Median seconds per call; the runner returns numpy, so each call waits for the device."""
    for _ in range(warmup):
        runner(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", default="float32,float16,bfloat16")
    parser.add_argument("--batches", default="1,2,4,8,16,32")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    batches = [int(b) for b in args.batches.split(",")]
    rng = np.random.default_rng(0)
    probe = rng.standard_normal((4, 256, 192, 3)).astype(np.float32)
    reference = None
    weights = None
    rows = []
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, GPU visible: {gpu_visible()}")
    for dtype in args.dtypes.split(","):
        keras.config.set_dtype_policy(dtype)
        model = build_simple_baseline(depth=50)
        if weights is None:
            weights = model.get_weights()
        else:
            model.set_weights([w.astype(v.dtype) for w, v in zip(weights, model.get_weights())])
        runner = KerasRunner(model)
        heatmaps = np.asarray(runner(probe), np.float32)
        if reference is None:
            reference = heatmaps
        diff = float(np.abs(heatmaps - reference).max())
        moved = float((heatmaps.reshape(4, -1, 17).argmax(1) != reference.reshape(4, -1, 17).argmax(1)).mean())
        for batch_size in batches:
            batch = rng.standard_normal((batch_size, 256, 192, 3)).astype(np.float32)
            seconds = time_runner(runner, batch, args.warmup, args.repeats)
            rows.append({"dtype": dtype, "batch": batch_size, "ms_per_batch": seconds * 1000,
                         "ms_per_person": seconds * 1000 / batch_size, "max_abs_diff_vs_float32": diff,
                         "peaks_moved_vs_float32": moved})
            print(f"{dtype:9s} batch {batch_size:3d}: {seconds * 1000:8.2f} ms/batch {seconds * 1000 / batch_size:7.2f} "
                  f"ms/person   vs float32: max|diff| {diff:.3g}, peaks moved {moved:.1%}")
    keras.config.set_dtype_policy("float32")
    if args.json:
        record = {"machine": {"platform": platform.platform(), "keras": keras.__version__,
                              "backend": keras.backend.backend(),
                              "date": datetime.now(timezone.utc).isoformat(timespec="seconds")},
                  "rows": rows}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
