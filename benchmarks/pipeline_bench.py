"""End-to-end speed of the demo on a video, variants side by side in one run, plus the model alone.

    python -m benchmarks.pipeline_bench --video ../shared/assets/videos/dancer.avi \
        --detector ../shared/assets/detector/yolov8n_int8.tflite --json out/bench.json

Variants, each over the same frames of the same video, in one process:
  plain       the naive loop: detector on every frame, Keras model, one stage after the other
  sequential  the product's stages (auto runtime, detector every N frames) one after the other
  product     the product as run_demo runs it: the same stages overlapped in three threads
  product-spinning  the same with ONNX Runtime's busy-waiting worker threads (its own default),
              which the product turns off (app.runtime.OnnxRunner)
  product-int8  the product with the model quantized to int8 by ONNX Runtime's tool: speed only, not
              offered (benchmarks/model_bench.py, onnx_int8_runner)

--model r50,mobilenetv2 runs every variant with each model (SimpleBaseline-R50, SimpleBaseline-
MobileNetV2), models alternating variant by variant, in one process.

Without --weights the pose model has random weights: the timings are real (the arithmetic does not
depend on the values) but the keypoints are not, so the detector schedule cannot rely on them: the
detector runs every --detect-every frames and a person keeps their box in between (CarryBoxPipeline).
Detector calls per frame are printed for each run, and the process's CPU time per frame (all threads):
on a shared machine the FPS falls with the load, the CPU time much less: a quiet 2-core machine
would give between 1000 / CPU ms (no parallelism) and 2000 / CPU ms (perfect use of both cores) FPS; benchmarks/detect_schedule.py measures the real
schedule's recall with a real keypoint model.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import app  # noqa: F401  (first: keeps triton out, see app/__init__.py)
from benchmarks.machine import cpu_model  # noqa: E402

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from app.pipeline import PipelineConfig, PosePipeline  # noqa: E402

STAGES = ("read", "detect", "crop", "model", "decode", "track", "smooth", "draw", "write")


def machine_info() -> dict:
    cpu = cpu_model()
    import cv2
    import keras
    import onnxruntime
    import ultralytics

    return {
        "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
        "keras": keras.__version__, "keras_backend": keras.backend.backend(),
        "onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__, "numpy": np.__version__,
        "ultralytics": ultralytics.__version__, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def build_pipeline(model, runtime: str, detector_path: str, detect_every: int, max_det: int, imgsz: int,
                   trained: bool, spinning: bool = False, all_boxes: bool = False, int8: bool = False):
    from app.detector import DetectorConfig, PersonDetector
    from app.pose import PoseConfig, PoseEstimator
    from app.onnx_export import export_onnx
    from app.runtime import OnnxRunner, runner_from_model

    if spinning:
        runner = OnnxRunner(export_onnx(model).SerializeToString(), spinning=True)
    elif int8:
        from benchmarks.model_bench import onnx_int8_runner

        runner = onnx_int8_runner(export_onnx(model).SerializeToString(), tuple(model.input_shape[1:3]), None)
        runner.name = "onnxruntime-int8 (not offered)"
    else:
        runner = runner_from_model(model, runtime=runtime)
    detector = PersonDetector(DetectorConfig(model=detector_path, imgsz=imgsz, max_det=max_det))
    config = PipelineConfig(detect_every=detect_every)
    if all_boxes:
        config.tracker.min_new_score = 0.0  # every detector box (up to max_det) becomes a person
    if not trained:
        config.min_track_score = 0.0  # random weights' confidences mean nothing (module docstring)
        return CarryBoxPipeline(detector, PoseEstimator(runner, PoseConfig()), config), runner
    return PosePipeline(detector, PoseEstimator(runner, PoseConfig()), config), runner


class CarryBoxPipeline(PosePipeline):
    """For random weights only: between detections each person keeps their last box, because boxes
    derived from meaningless keypoints would be empty. Deriving a box costs microseconds, so the
    timings are those of the product; the boxes are not."""

    def _derive_next_boxes(self, people, shape, detected):
        self._next_boxes = np.array([p.box for p in people], np.float32).reshape(-1, 4)
        self._next_scores = np.array([p.box_score for p in people], np.float32)


def run_sequential(pipeline, video: str, frames: int, out_dir: Path, label: str) -> dict:
    """One stage after the other, each timed. Returns per-stage mean ms and end-to-end FPS."""
    from app.views import ViewState, render
    from app.outputs import VideoOutput
    from app.sources import open_source

    totals = dict.fromkeys(STAGES, 0.0)
    state = ViewState()
    count = people = 0
    with open_source(video) as source:
        output = VideoOutput(out_dir / f"{label}.avi", fps=source.fps or 25.0)
        iterator = iter(source)
        start, start_cpu = time.perf_counter(), time.process_time()
        while count < frames:
            t0 = time.perf_counter()
            frame = next(iterator, None)
            totals["read"] += time.perf_counter() - t0
            if frame is None:
                break
            result = pipeline.process(frame.image)
            people += len(result.people)
            for stage in ("detect", "crop", "model", "decode", "track", "smooth"):
                totals[stage] += result.timings_ms.get(stage, 0.0) / 1000
            t0 = time.perf_counter()
            canvas = render(frame.image, result, state, pipeline.kalman, 0.0, 0.3)
            totals["draw"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            output.write(canvas)
            totals["write"] += time.perf_counter() - t0
            count += 1
        elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        output.close()
    row = {f"{stage}_ms": 1000 * totals[stage] / max(count, 1) for stage in STAGES}
    row.update(variant=label, frames=count, fps=count / elapsed, people_per_frame=people / max(count, 1),
               cpu_ms_per_frame=1000 * cpu / max(count, 1),
               detector_calls_per_frame=pipeline.detector_calls / max(count, 1))
    return row


def run_threaded(pipeline, video: str, frames: int, out_dir: Path, label: str) -> dict:
    """The product's overlapped loop (app.demo.run), headless, writing a video like a user would."""
    from app.demo import DemoOptions, run
    from app.sources import open_source

    options = DemoOptions(source=video, output=str(out_dir / f"{label}.avi"), overwrite=True,
                          headless=True, max_frames=frames, progress=False)
    source = open_source(video)
    start, start_cpu = time.perf_counter(), time.process_time()
    count = run(options, pipeline, source, show=False)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return {"variant": label, "frames": count, "fps": count / elapsed, "cpu_ms_per_frame": 1000 * cpu / max(count, 1),
            "detector_calls_per_frame": pipeline.detector_calls / max(count, 1)}


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)))


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 1 else f"{value:.2f}"
    return str(value)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", required=True)
    parser.add_argument("--detector", required=True)
    parser.add_argument("--weights", help="converted weights; default: random weights (timings only)")
    parser.add_argument("--model", default="r50",
                        help="without --weights: comma-separated random-weight models, r50 and/or mobilenetv2")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--detect-every", type=int, default=8)
    parser.add_argument("--max-det", type=int, default=100, help="cap on detector boxes per frame (for 5 vs 15 people)")
    parser.add_argument("--all-boxes", action="store_true",
                        help="every detector box starts a person, not only those scoring >= 0.5: with --max-det, "
                             "a set number of people per frame")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--variants", default="plain,sequential,product")
    parser.add_argument("--model-bench", action="store_true", help="also time the model alone per runtime")
    parser.add_argument("--json", help="append the results and the machine record to this JSON file")
    args = parser.parse_args(argv)

    if args.weights:
        from app.weights import load_pose_model

        models = [load_pose_model(args.weights)]
    else:
        from benchmarks.model_bench import build_model

        print("random weights: timings only, keypoints are meaningless")
        models = [build_model(name) for name in args.model.split(",")]

    info = machine_info()
    print(f"machine: {info['cpu']}, {info['cores']} cores; keras {info['keras']} ({info['keras_backend']}), "
          f"onnxruntime {info['onnxruntime']}; {info['date']}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant, model in ((v, m) for v in args.variants.split(",") for m in models):
            out_dir = Path(tmp) / model.name  # each model's videos apart
            out_dir.mkdir(exist_ok=True)
            if variant == "plain":
                pipeline, runner = build_pipeline(model, "keras", args.detector, 1, args.max_det, args.imgsz,
                                                  trained=bool(args.weights), all_boxes=args.all_boxes)
                rows.append(run_sequential(pipeline, args.video, args.frames, out_dir, "plain"))
            elif variant == "sequential":
                pipeline, runner = build_pipeline(model, "auto", args.detector, args.detect_every, args.max_det, args.imgsz,
                                                  trained=bool(args.weights), all_boxes=args.all_boxes)
                rows.append(run_sequential(pipeline, args.video, args.frames, out_dir, "sequential"))
            elif variant in ("product", "product-spinning", "product-int8"):
                pipeline, runner = build_pipeline(model, "auto", args.detector, args.detect_every, args.max_det, args.imgsz,
                                                  trained=bool(args.weights), spinning=variant == "product-spinning",
                                                  all_boxes=args.all_boxes, int8=variant == "product-int8")
                rows.append(run_threaded(pipeline, args.video, args.frames, out_dir, variant))
            else:
                raise SystemExit(f"unknown variant {variant!r}")
            rows[-1]["runtime"] = getattr(runner, "name", "?")
            rows[-1]["model"] = model.name
    print(f"\n{Path(args.video).name}, {args.frames} frames, max {args.max_det} people, detector every "
          f"{args.detect_every} frames (plain: every frame)")
    print_table(rows, ["variant", "model", "runtime", "frames", "fps", "cpu_ms_per_frame", "people_per_frame",
                       "detector_calls_per_frame"]
                + [f"{s}_ms" for s in STAGES])
    base = next((r["fps"] for r in rows if r["variant"] == "plain"), None)
    if base:
        print("speed-up over plain: " + ", ".join(f"{r['variant']} ({r['model']}) {r['fps'] / base:.2f}x" for r in rows))

    record = {"machine": info, "video": args.video, "pipeline": rows}
    if args.model_bench:
        from benchmarks.model_bench import run_model_bench

        record["model"] = run_model_bench(models=models)
    if args.json:
        path = Path(args.json)
        history = json.loads(path.read_text()) if path.exists() else []
        history.append(record)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(history, indent=1))
        tmp.replace(path)


if __name__ == "__main__":
    main()
