"""The person detector on the CPU: today's LiteRT int8 path against Ultralytics' own OpenVINO export
(float32 IR and int8), side by side, through app.detector.PersonDetector (issue 18).

    python -m benchmarks.detector_openvino_bench --frames 30 --repeats 3
    PYTHONPATH=/path/to/nncf-site python -m benchmarks.detector_openvino_bench --int8   # int8 needs nncf

yolov8n.pt cannot be downloaded here, so the OpenVINO and torch rows use a YOLOv8n with RANDOM
weights built from Ultralytics' own yolov8n.yaml (same layers, same arithmetic, so the same network
time): those rows are labelled "random YOLOv8n". Random weights give random boxes, so time in
NMS differs from a trained model's: the table gives Ultralytics' own inference time per frame
(`Results.speed["inference"]`) beside the whole detect() call. The LiteRT row is the shared trained
int8 detector. int8 OpenVINO: Ultralytics' export with NNCF post-training quantization, calibrated
on the shared COCO images (speed only: a random model's int8 scales say nothing about accuracy).

Rows, one detect() per frame, variants alternated frame by frame (a load change hits all alike):
  litert int8 (today)          ../shared/assets/detector/yolov8n_int8.tflite, 2 LiteRT threads
  torch .pt                    the random YOLOv8n .pt through torch (cpu_openvino=False)
  openvino f32 IR              its OpenVINO export, as the product now runs a .pt on the CPU
                               (OpenVINO's CPU default precision: bfloat16 where the CPU has it)
  openvino f32 IR, f32 hint    the same forced to float32 arithmetic
  openvino int8                the int8 export (--int8)
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from app.detector import DetectorConfig, PersonDetector, export_openvino_detector  # noqa: E402
from benchmarks.machine import cpu_model  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"


def random_yolov8n(folder: Path) -> Path:
    """A YOLOv8n with random weights from Ultralytics' yolov8n.yaml, saved as a .pt (no download)."""
    from ultralytics import YOLO

    path = folder / "yolov8n_random.pt"
    YOLO("yolov8n.yaml").save(str(path))
    return path


def int8_export(pt_path: Path, imgsz: int, folder: Path) -> Path:
    """Ultralytics' int8 OpenVINO export (NNCF), calibrated on the shared COCO images."""
    from ultralytics import YOLO

    images = ASSETS / "coco" / "images"
    data = folder / "calibration.yaml"
    model = YOLO(str(pt_path), task="detect")
    names = "\n".join(f"  {index}: {name}" for index, name in model.names.items())
    data.write_text(f"path: {images.parent}\ntrain: images\nval: images\nnames:\n{names}\n")
    return Path(model.export(format="openvino", imgsz=imgsz, int8=True, data=str(data), fraction=1.0, verbose=False))


class ForcedFloat32:
    """While active, OpenVINO compiles for the CPU with INFERENCE_PRECISION_HINT f32 (Ultralytics'
    backend sets no precision, so OpenVINO picks bfloat16 on a CPU with AVX512_BF16 or AMX)."""

    def __enter__(self):
        import openvino as ov

        self.original = ov.Core.compile_model

        def compile_model(core, model, device_name=None, config=None, **kwargs):
            config = {**(config or {}), "INFERENCE_PRECISION_HINT": "f32"}
            return self.original(core, model, device_name, config, **kwargs)

        ov.Core.compile_model = compile_model
        return self

    def __exit__(self, *exc):
        import openvino as ov

        ov.Core.compile_model = self.original


def read_frames(video: Path, count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2, help="passes over the frames")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--int8", action="store_true", help="also the int8 export (needs nncf importable)")
    parser.add_argument("--video", default=str(ASSETS / "videos" / "dancer.avi"))
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="detector_bench_"))
    pt_path = random_yolov8n(folder)
    started = time.perf_counter()
    ov_folder = export_openvino_detector(pt_path, args.imgsz)
    export_s = time.perf_counter() - started
    config = dict(conf=0.1, imgsz=args.imgsz, threads=2)
    detectors = {
        "litert int8 (today, trained)": PersonDetector(DetectorConfig(
            model=str(ASSETS / "detector" / "yolov8n_int8.tflite"), **config)),
        "torch .pt (random YOLOv8n)": PersonDetector(DetectorConfig(model=str(pt_path), cpu_openvino=False, **config)),
        "openvino f32 IR (random YOLOv8n)": PersonDetector(DetectorConfig(model=str(ov_folder), **config)),
    }
    with ForcedFloat32():
        detectors["openvino f32 IR, f32 hint (random)"] = PersonDetector(DetectorConfig(model=str(ov_folder), **config))
    if args.int8:
        detectors["openvino int8 (random YOLOv8n)"] = PersonDetector(DetectorConfig(
            model=str(int8_export(pt_path, args.imgsz, folder)), **config))

    frames = read_frames(Path(args.video), args.frames)
    for detector in detectors.values():
        detector.detect(frames[0])
    wall = {name: [] for name in detectors}
    inference = {name: [] for name in detectors}
    for _ in range(args.repeats):
        for frame in frames:
            for name, detector in detectors.items():
                time.sleep(0.02)
                start = time.perf_counter()
                detector.detect(frame)
                wall[name].append(time.perf_counter() - start)
                inference[name].append(detector._model.predictor.results[0].speed["inference"] / 1e3)

    load = os.getloadavg()
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical cores; load average {load[0]:.1f} {load[1]:.1f} "
          f"{load[2]:.1f} (shared machine); {len(frames)} frames of {Path(args.video).name} x {args.repeats}, "
          f"imgsz {args.imgsz}; OpenVINO export of the .pt took {export_s:.1f} s")
    print(f"{'detector':40s} {'detect ms (median)':>18s} {'min':>7s} {'inference ms (median)':>21s} {'min':>7s}")
    for name in detectors:
        print(f"{name:40s} {statistics.median(wall[name]) * 1e3:18.1f} {min(wall[name]) * 1e3:7.1f} "
              f"{statistics.median(inference[name]) * 1e3:21.1f} {min(inference[name]) * 1e3:7.1f}")


if __name__ == "__main__":
    main()
