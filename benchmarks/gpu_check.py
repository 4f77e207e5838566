"""The GPU check: both networks on the device the product picks, timed and compared with the CPU.

    python -m benchmarks.gpu_check --dancer ASSETS/videos/dancer.avi --street ASSETS/videos/street.avi \
        --detector ASSETS/detector/yolov8n_int8.tflite --json out/gpu_check.json

(ASSETS: ../shared/assets here; any folder holding copies elsewhere.) It needs torch but neither
TensorFlow nor a network: the device and the Keras backend are chosen by app.device exactly as
run_demo.py chooses them (torch backend on a GPU), before Keras is imported. Under 5 minutes on a
data-centre GPU. It prints four tables:

  1. model   the pose model alone on the device, ms per person at batch 1, 8 and 32, float32 and
             float16: TorchRunner (the product's runner on CUDA, --runtime auto: CUDA graphs per
             bucket) and KerasRunner (Keras on its torch backend, --runtime keras) side by side, so
             the table shows auto's pick is the faster one; with each call's host ms (the CPU time
             of queuing it: TorchRunner's upload + replay + download, before it waits for the GPU)
             and Python calls (sys.setprofile); beside ONNX Runtime on this machine's CPU (the CPU
             path); and the detector alone: the file given, where the product runs it, and a
             YOLOv8n built from Ultralytics' bundled yolov8n.yaml (random weights, speed only);
  2. e2e     end-to-end FPS with the product's defaults (run_demo's threaded loop, headless,
             detector every 8 frames, writing a video; --runtime auto, the torch runner on CUDA) on
             dancer.avi and street.avi --max-people 5, float32 and --half, and on the CPU; plus
             reading + writing the video alone, which bounds them all;
  3. agree   the keypoints of the same frames and boxes on the device against ONNX Runtime on the CPU
             (float32 and float16), in pixels;
  4. warps   cropping on the device (torch grid_sample from the frame uploaded once) against the
             product's CPU warps (cv2.warpAffine, then the crops uploaded), per frame, and the largest
             difference between the two sets of crops.

Without --weights the pose model has RANDOM weights: the timings are real (the arithmetic does not
depend on the values) but the keypoints are not, so table 3's differences there only show the
plumbing; with random weights the heatmaps are nearly flat and a tiny change moves their peaks. Give
--weights (a converted .weights.h5) for the real cost of float16 and of the GPU in pixels.
Without --detector-pt the detector is the file given, which for a .tflite runs on the CPU (the
start-up line says so); with a YOLO .pt the detector runs on the device too.

It ends with the issue-17 summary: end-to-end FPS on dancer (1 person) and street (5 people), R50
float16, torch runner; the batch-8 R50 float16 forward; the host ms per model call; each beside its goal.

--quick: a few frames and batch 1, to prove the script on a CPU (`KERAS_BACKEND=torch` or not).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import app  # noqa: F401  (first: keeps triton out, see app/__init__.py)
from benchmarks.python_calls import count_python_calls  # noqa: E402
from app.device import choose_devices  # noqa: E402

os.environ.setdefault("YOLO_OFFLINE", "1")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dancer", required=True, help="dancer.avi (one person)")
    parser.add_argument("--street", required=True, help="street.avi (a crowd; run with --max-people 5)")
    parser.add_argument("--detector", required=True, help="the detector file (e.g. yolov8n_int8.tflite)")
    parser.add_argument("--detector-pt", help="a YOLO .pt detector, to also run the detector on the device")
    parser.add_argument("--weights", help="converted pose weights; default random weights (timings only)")
    parser.add_argument("--device", default="auto", help="as run_demo.py: auto, cpu, cuda, cuda:N, mps")
    parser.add_argument("--frames", type=int, default=300, help="frames per end-to-end run")
    parser.add_argument("--quick", action="store_true", help="a short run that proves the script (CPU)")
    parser.add_argument("--json", help="write every table and the machine here")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames = min(args.frames, 12)
    return args


# --- helpers -------------------------------------------------------------------------------------------

def median_ms(call, warmup: int, repeats: int, sync=lambda: None) -> float:
    """Median milliseconds of call(); sync() waits for the device (a runner returning numpy already has)."""
    for _ in range(warmup):
        call()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def print_table(title: str, rows: list[dict], columns: list[str]) -> None:
    def fmt(value):
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"
        return str(value)

    print(f"\n{title}")
    widths = [max(len(c), *(len(fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in rows:
        print("  ".join(fmt(row.get(c)).ljust(w) for c, w in zip(columns, widths)))


def read_frames(video: str, count: int) -> list:
    from app.sources import open_source

    frames = []
    with open_source(video) as source:
        for frame in source:
            frames.append(frame.image)
            if len(frames) == count:
                break
    return frames


def torch_sync(device: str):
    import torch

    if device.startswith("cuda"):
        return lambda: torch.cuda.synchronize(device)
    if device == "mps":
        return torch.mps.synchronize
    return lambda: None


# --- 1. the model alone ----------------------------------------------------------------------------------


def host_ms(runner, batch, repeats: int) -> float | None:
    """Median host milliseconds of one call of a TorchRunner on CUDA: queuing the upload, the graph
    replay and the download (launch), plus copying the heatmaps out once they are there; the time
    spent waiting for the GPU is left out. None for other runners (their call is the compute, or
    waits inside)."""
    graphs = getattr(runner, "_graphs", None)
    if graphs is None or not graphs.use_graphs:
        return None
    from app.runtime.torch_runner import plan_buckets

    import torch

    (_, _, bucket), = plan_buckets(len(batch), graphs.buckets)  # one bucket: batches up to 16
    times = []
    with torch.inference_mode():  # as TorchRunner.__call__ runs it
        for _ in range(repeats + 2):
            start = time.perf_counter()
            done = graphs.launch(batch, bucket)
            queued = time.perf_counter()
            done.synchronize()
            arrived = time.perf_counter()
            graphs.host_out[:len(batch)].numpy().copy()
            times.append((queued - start) + (time.perf_counter() - arrived))
    return 1000 * statistics.median(times[2:])


def model_table(model, device: str, quick: bool) -> list[dict]:
    import numpy as np

    from app.onnx_export import export_onnx
    from app.runtime import KerasRunner, OnnxRunner
    from app.runtime.torch_runner import TorchRunner

    batches = (1,) if quick else (1, 8, 32)
    warmup, repeats = (1, 1) if quick else (3, 20)
    rng = np.random.default_rng(0)
    height, width = model.input_shape[1:3]
    rows = []
    runners = [("torch", TorchRunner(model, device=device)),
               ("torch", TorchRunner(model, device=device, precision="float16")),
               ("keras", KerasRunner(model)), ("keras", KerasRunner(model, half=True)),
               ("onnx", OnnxRunner(export_onnx(model).SerializeToString()))]
    for kind, runner in runners:
        if kind == "torch" and runner.note:
            continue  # float16 on a CPU runs float32: the row above
        for batch_size in batches if kind != "onnx" else batches[:2]:  # ONNX Runtime: the CPU path, 1 and 8
            batch = rng.standard_normal((batch_size, height, width, 3)).astype(np.float32)
            ms = median_ms(lambda: runner(batch), warmup, repeats)
            rows.append({"runner": runner.engine, "device": runner.device, "dtype": runner.precision,
                         "batch": batch_size, "ms_per_batch": ms, "ms_per_person": ms / batch_size,
                         "host_ms_per_call": host_ms(runner, batch, repeats) if batch_size <= 16 else None,
                         "python_calls": count_python_calls(lambda: runner(batch))})
    return rows


def summary(record: dict, device: str) -> list[str]:
    """The issue-17 figures, each beside its goal: e2e FPS (dancer, street 5 people) and the batch-8
    forward, R50 float16 through the torch runner, and the host ms per model call."""
    def e2e(video: str):
        for row in record["e2e"]:
            if row["video"] == video and row["variant"] == "product --half" and "torch" in row.get("runs_on", ""):
                return row
        return None

    lines = []
    for video, goal in (("dancer.avi", 150), ("street.avi", 80)):
        row = e2e(video)
        fps = f"{row['fps']:.1f} FPS ({row['runs_on'].split(';')[0]})" if row else "not run"
        lines.append(f"end to end {video} ({'1 person' if video == 'dancer.avi' else '--max-people 5'}), R50 float16, torch "
                     f"runner, headless: {fps}; goal >= {goal}")
    forward = [r for r in record["model"] if r["runner"].startswith("torch") and r["dtype"] == "float16"
               and r["batch"] == 8]
    lines.append(f"R50 float16 batch-8 forward (torch runner, {device}): "
                 + (f"{forward[0]['ms_per_batch']:.2f} ms" if forward else "not run (float16 runs on a GPU only)")
                 + "; goal <= 2 ms")
    host = [r["host_ms_per_call"] for r in record["model"] if r["runner"].startswith("torch")
            and r.get("host_ms_per_call") is not None]
    calls = [r["python_calls"] for r in record["model"] if r["runner"].startswith("torch")]
    lines.append("host ms per model call (torch runner, CUDA graphs): "
                 + (f"{max(host):.3f} ms (worst of batch 1 and 8, float32 and float16)" if host
                    else "not measured (no CUDA: on a CPU the call is the compute)")
                 + f"; goal <= 1 ms; Python calls per call: {max(calls) if calls else '-'} (goal <= 2000)")
    return lines


# --- 1b. the detector alone -------------------------------------------------------------------------------

def detector_table(detectors: list[str], video: str, device: str, quick: bool) -> list[dict]:
    """ms per frame of each detector file where the product runs it, and of a YOLOv8n built from
    Ultralytics' bundled yolov8n.yaml (random weights, no download: speed only) on the device."""
    import torch

    from app.detector import DetectorConfig, PersonDetector, _import_yolo

    frame = read_frames(video, 1)[0]
    repeats = 3 if quick else 30
    sync = torch_sync(device)
    rows = []
    for detector in detectors:
        for half in (False, True):
            model = PersonDetector(DetectorConfig(model=detector, device=device, half=half))
            if half and model.precision == "float32":
                continue  # the float32 row already says it
            rows.append({"detector": Path(detector).name, "weights": "trained", "device": model.device,
                         "dtype": model.precision, "ms_per_frame": median_ms(lambda: model.detect(frame), 2, repeats, sync)})
    threads = torch.get_num_threads()
    YOLO, _ = _import_yolo()
    model = YOLO("yolov8n.yaml", task="detect")
    for half in (False, True) if device != "cpu" else (False,):
        precision = {"quantize": 16} if half else {}

        def call():
            model.predict(frame, imgsz=640, device=device, classes=[0], verbose=False, **precision)

        rows.append({"detector": "yolov8n.yaml", "weights": "RANDOM (speed only)", "device": device,
                     "dtype": "float16" if half else "float32", "ms_per_frame": median_ms(call, 3, repeats, sync)})
    torch.set_num_threads(threads)  # Ultralytics' predict changes it
    return rows


# --- 2. end to end -----------------------------------------------------------------------------------------

def io_bound(video: str, frames: int, out_dir: Path) -> dict:
    """Reading and writing the video alone, as the demo does (no networks): the ceiling for FPS."""
    from app.outputs import VideoOutput
    from app.sources import open_source

    count = 0
    with open_source(video) as source:
        output = VideoOutput(out_dir / "io.avi", fps=source.fps or 25.0)
        start = time.perf_counter()
        for frame in source:
            output.write(frame.image)
            count += 1
            if count == frames:
                break
        elapsed = time.perf_counter() - start
        output.close()
    return {"fps": count / elapsed, "frames": count}


def e2e_row(model, video: str, detector: str, max_people: int, device: str, detector_device: str, half: bool,
            frames: int, out_dir: Path, trained: bool, runtime: str = "auto") -> dict:
    from app.detector import DetectorConfig, PersonDetector
    from app.device import startup_line
    from app.pipeline import PipelineConfig, PosePipeline
    from app.pose import PoseConfig, PoseEstimator
    from app.runtime import runner_from_model
    from benchmarks.pipeline_bench import CarryBoxPipeline, run_threaded

    runner = runner_from_model(model, runtime, device=device, half=half)
    detector_model = PersonDetector(DetectorConfig(model=detector, max_det=max_people, device=detector_device,
                                                   half=half))
    config = PipelineConfig()  # the product's defaults: detector every 8 frames, Kalman on
    if trained:
        pipeline = PosePipeline(detector_model, PoseEstimator(runner, PoseConfig()), config)
    else:
        config.min_track_score = 0.0  # random weights' confidences mean nothing (pipeline_bench)
        pipeline = CarryBoxPipeline(detector_model, PoseEstimator(runner, PoseConfig()), config)
    height, width = runner.input_size
    runs_on = startup_line(f"SimpleBaseline {height}x{width}", runner.engine, runner.device, runner.precision,
                           Path(detector).name, detector_model.device, detector_model.precision, detector_model.note)
    # The output file's name: "cuda:0" loses its colon, which names a data stream on NTFS (Windows).
    label = f"{Path(video).stem}-{runner.device.replace(':', '')}-{runner.precision}-{Path(detector).stem}"
    row = run_threaded(pipeline, video, frames, out_dir, label)
    row.update(video=Path(video).name, max_people=max_people, runs_on=runs_on)
    return row


# --- 3. keypoints, device against CPU ------------------------------------------------------------------------

def agreement_table(model, videos: list[tuple[str, int]], detector: str, frames: int) -> list[dict]:
    import numpy as np

    from app.detector import DetectorConfig, PersonDetector
    from app.pose import PoseEstimator
    from app.runtime import runner_from_model

    reference = PoseEstimator(runner_from_model(model, "onnx"))
    runners = [runner_from_model(model, runtime, half=half) for runtime in ("torch", "keras") for half in (False, True)]
    # float16 asked of the torch runner on a CPU runs float32 (its note says so): the row above.
    candidates = [PoseEstimator(runner) for runner in runners if not getattr(runner, "note", "")]
    rows = []
    for video, max_people in videos:
        boxes_of = PersonDetector(DetectorConfig(model=detector, max_det=max_people))
        diffs = {id(c): [] for c in candidates}
        heat = {id(c): [] for c in candidates}
        people = 0
        for frame in read_frames(video, frames):
            boxes, _ = boxes_of.detect(frame)
            if not len(boxes):
                continue
            people += len(boxes)
            expected = reference.estimate(frame, boxes, return_heatmaps=True)
            for candidate in candidates:
                result = candidate.estimate(frame, boxes, return_heatmaps=True)
                diffs[id(candidate)].append(np.linalg.norm(result.keypoints - expected.keypoints, axis=-1).ravel())
                spread = max(float(np.ptp(expected.heatmaps)), 1e-12)
                heat[id(candidate)].append(float(np.abs(result.heatmaps - expected.heatmaps).max()) / spread)
        for candidate in candidates:
            distances = np.concatenate(diffs[id(candidate)]) if diffs[id(candidate)] else np.zeros(0)
            rows.append({"video": Path(video).name, "people": people, "runner": candidate.runner.name,
                         "device": candidate.runner.device,
                         "dtype": candidate.runner.precision,
                         "max_px": float(distances.max()) if len(distances) else None,
                         "median_px": float(np.median(distances)) if len(distances) else None,
                         "share_over_1px": float((distances > 1).mean()) if len(distances) else None,
                         "heatmap_max_diff_of_range": max(heat[id(candidate)], default=None)})
    return rows


# --- 4. crops on the device against CPU warps ------------------------------------------------------------------

def device_crops(frame, to_image, input_size, device: str):
    """Crops on the device: the frame goes up once (uint8), each output pixel samples the frame where
    the crop's inverse affine puts it (bilinear, zeros outside, as cv2.warpAffine's BORDER_CONSTANT),
    then BGR -> RGB and ImageNet normalisation there. to_image (N, 2, 3): crop pixel -> image pixel.
    Returns (N, H, W, 3) float32 on the device, what the model takes."""
    import torch
    import torch.nn.functional as F

    from app.crop import IMAGENET_MEAN, IMAGENET_STD

    height, width = input_size
    image = torch.from_numpy(frame).to(device, non_blocking=True)
    image = image.permute(2, 0, 1)[None].float()  # (1, 3, Hf, Wf) BGR
    n = len(to_image)
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                            torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(-1, 3)  # (H*W, 3)
    matrices = torch.as_tensor(to_image, dtype=torch.float32, device=device)  # (N, 2, 3)
    source = torch.einsum("nij,pj->npi", matrices, points)  # (N, H*W, 2) image x, y
    frame_h, frame_w = frame.shape[:2]
    # align_corners=False: -1 and 1 are the outer edges of the border pixels, so pixel x is at (2x + 1) / W - 1.
    grid = torch.stack([(2 * source[..., 0] + 1) / frame_w - 1, (2 * source[..., 1] + 1) / frame_h - 1], dim=-1)
    crops = F.grid_sample(image.expand(n, -1, -1, -1), grid.reshape(n, height, width, 2), mode="bilinear",
                          padding_mode="zeros", align_corners=False)  # (N, 3, H, W)
    rgb = crops.flip(1).permute(0, 2, 3, 1) / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=device)
    std = torch.tensor(IMAGENET_STD, device=device)
    return (rgb - mean) / std


def warps_table(video: str, detector: str, device: str, quick: bool) -> list[dict]:
    import numpy as np
    import torch

    from app.crop import boxes_to_center_scale, crop_transforms, normalize, warp_crops
    from app.detector import DetectorConfig, PersonDetector

    frame = read_frames(video, 1)[0]
    boxes, _ = PersonDetector(DetectorConfig(model=detector)).detect(frame)
    if not len(boxes):
        h, w = frame.shape[:2]
        boxes = np.array([[w * 0.3, h * 0.2, w * 0.6, h * 0.9]], np.float32)
    input_size = (256, 192)
    sync = torch_sync(device)
    rows = []
    for people in ((1, 5) if quick else (1, 5, 32)):
        chosen = boxes[np.arange(people) % len(boxes)]
        centers, sizes = boxes_to_center_scale(chosen, aspect_ratio=input_size[1] / input_size[0], padding=1.25)
        forward, to_image = crop_transforms(centers, sizes, input_size)

        def cpu_path():  # the product: cv2 warps, normalise, then the batch goes up to the device
            return torch.from_numpy(normalize(warp_crops(frame, forward, input_size))).to(device)

        def device_path():
            return device_crops(frame, to_image, input_size, device)

        repeats = 3 if quick else 30
        cpu_ms = median_ms(cpu_path, 1, repeats, sync)
        device_ms = median_ms(device_path, 1, repeats, sync)
        difference = (cpu_path() - device_path()).abs()
        inside = difference[:, 2:-2, 2:-2]  # the border pixels differ by where each library puts "outside"
        std = float(np.mean((0.229, 0.224, 0.225)))
        rows.append({"people": people, "device": device, "cpu_warp_ms": cpu_ms, "device_warp_ms": device_ms,
                     "faster": "device" if device_ms < cpu_ms else "cpu",
                     "max_diff_0_255": float(inside.max()) * std * 255,
                     "mean_diff_0_255": float(inside.mean()) * std * 255})
    return rows


# --- main -------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    choice = choose_devices(args.device)  # before Keras is imported, as run_demo.py
    if choice.note:
        print(choice.note)
    import keras

    from app.runtime import keras_device
    from benchmarks.machine import cpu_model

    device = choice.pose_device
    if device != "cpu" and keras_device() != device:
        print(f"warning: Keras ({keras.backend.backend()}) runs on {keras_device()}, not {device}")
    import torch

    gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else device
    info = {"gpu": gpu, "cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_cuda": torch.version.cuda, "keras": keras.__version__,
            "keras_backend": keras.backend.backend(), "tensorflow_importable": _importable("tensorflow"),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "quick": args.quick}
    print(f"GPU check: {gpu}; {info['cpu']}, {info['cores']} cores; torch {info['torch']} (CUDA {info['torch_cuda']}), "
          f"Keras {info['keras']} ({info['keras_backend']} backend), TensorFlow importable: "
          f"{info['tensorflow_importable']}; {info['date']}")

    if args.weights:
        from app.weights import load_pose_model

        model, trained = load_pose_model(args.weights), True
    else:
        from models.simple_baseline import build_simple_baseline

        keras.utils.set_random_seed(0)
        model, trained = build_simple_baseline(depth=50), False
        print("RANDOM pose weights: timings are real; keypoint differences (table 3) only show the plumbing")

    record = {"machine": info, "trained_weights": trained}
    record["model"] = model_table(model, device, args.quick)
    print_table("1. pose model alone, SimpleBaseline-R50 256x192 (ms per person; host ms: queuing a call)",
                record["model"], ["runner", "device", "dtype", "batch", "ms_per_batch", "ms_per_person",
                                  "host_ms_per_call", "python_calls"])

    videos = [(args.dancer, 100), (args.street, 5)]
    detectors = [args.detector] + ([args.detector_pt] if args.detector_pt else [])
    record["detector"] = detector_table(detectors, args.street, choice.detector_device, args.quick)
    print_table("1b. detector alone, 640 px, one street frame (ms per frame)", record["detector"],
                ["detector", "weights", "device", "dtype", "ms_per_frame"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        for video, max_people in videos:
            rows.append({"video": Path(video).name, "max_people": max_people, "variant": "read + write only",
                         **io_bound(video, args.frames, out_dir)})
            settings = [(device, choice.detector_device, False), (device, choice.detector_device, True)]
            if device != "cpu":
                settings.append(("cpu", "cpu", False))  # the CPU path on the same machine
            for detector in detectors:
                for pose_device, detector_device, half in settings:
                    if half and pose_device == "cpu":
                        continue  # ONNX Runtime on the CPU runs float32: the row above
                    row = e2e_row(model, video, detector, max_people, pose_device, detector_device, half,
                                  args.frames, out_dir, trained)
                    row["variant"] = "product" + (" --half" if half else "") + (" --device cpu" if pose_device == "cpu" else "")
                    rows.append(row)
            if args.quick and device == "cpu":
                # The GPU rows' runner (torch, --half: float32 with a note on a CPU), here on the CPU.
                row = e2e_row(model, video, args.detector, max_people, "cpu", "cpu", True, args.frames, out_dir,
                              trained, runtime="torch")
                row["variant"] = "--runtime torch --half (quick: the GPU path's runner)"
                rows.append(row)
    record["e2e"] = rows
    print_table(f"2. end to end, product defaults (detector every 8 frames, Kalman, video written), {args.frames} frames",
                rows, ["video", "max_people", "variant", "frames", "fps", "detector_calls_per_frame", "runs_on"])

    record["agree"] = agreement_table(model, videos, args.detector, 2 if args.quick else 40)
    print_table(f"3. keypoints on {device} against ONNX Runtime on the CPU, same frames and boxes"
                + ("" if trained else " (RANDOM weights: plumbing only)"), record["agree"],
                ["video", "people", "runner", "device", "dtype", "max_px", "median_px", "share_over_1px",
                 "heatmap_max_diff_of_range"])

    record["warps"] = warps_table(args.street, args.detector, device, args.quick)
    print_table("4. crops: cv2 warps on the CPU + upload (the product) against grid_sample on the device (ms per frame)",
                record["warps"], ["people", "device", "cpu_warp_ms", "device_warp_ms", "faster", "max_diff_0_255",
                                  "mean_diff_0_255"])
    record["summary"] = summary(record, device)
    print("\nissue 17 summary" + ("" if device.startswith("cuda") else f" (on {device}: the GPU figures are not measured)"))
    for line in record["summary"]:
        print("  " + line)
    record["seconds"] = time.perf_counter() - started
    print(f"\n{record['seconds']:.0f} s in all")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1))
    return 0


def _importable(name: str) -> bool:
    import importlib.util

    return sys.modules.get(name, False) is not None and importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    sys.exit(main())
