"""Real-time top-down pose on a webcam, a video, an image or a folder of images.

    python run_demo.py                          # webcam 0
    python run_demo.py --source video.mp4 --output out.mp4 --json out.json

Keys in the window: q or Esc quits, k toggles the Kalman smoothing, space pauses, h shows the
heatmaps the model predicts, c shows raw and smoothed keypoints together.
Errors print one line and exit with a status of their own (see README, Troubleshooting);
--debug shows the traceback instead.
"""

import argparse
import logging
import os
import sys

os.environ.setdefault("YOLO_OFFLINE", "1")  # Ultralytics must not phone home from a demo
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter (cuInit on a CPU) is no error of ours

from app.errors import run_command  # noqa: E402  (after the environment above)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _device(text: str) -> str:
    from app.device import parse_device

    try:
        return parse_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Real-time top-down human pose (YOLO + SimpleBaseline).")
    parser.add_argument("--source", default="0", help="camera index, video file, image, or folder of images")
    parser.add_argument("--weights", default=None,
                        help="converted SimpleBaseline weights (.weights.h5); default: the one in weights/")
    parser.add_argument("--detector", default="yolov8n.pt",
                        help="any detector file Ultralytics loads (.pt, .onnx, .tflite, ...)")
    parser.add_argument("--detector-conf", type=float, default=0.1,
                        help="lowest detection confidence kept; only boxes above 0.5 start a new person")
    parser.add_argument("--detector-size", type=int, default=640, help="detector input size in pixels")
    parser.add_argument("--max-people", type=_positive_int, default=100,
                        help="follow at most this many people, the most confident (the model's time grows with each)")
    parser.add_argument("--detect-every", type=int, default=8,
                        help="run the detector every N frames, tracking by keypoints in between (1 = always)")
    parser.add_argument("--runtime", choices=["auto", "keras", "onnx"], default="auto",
                        help="pose model runtime: auto picks ONNX Runtime on a CPU, Keras on a GPU")
    parser.add_argument("--device", type=_device, default="auto",
                        help="auto (a GPU torch sees, else the CPU), cpu, cuda, cuda:N or mps; both networks")
    parser.add_argument("--half", action="store_true", help="float16 for both networks where the device allows it")
    parser.add_argument("--output", help="write the annotated video here (.mp4 or .avi)")
    parser.add_argument("--json", help="write every frame's people here (format: see app/outputs.py)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    kalman = parser.add_mutually_exclusive_group()
    kalman.add_argument("--kalman", dest="kalman", action="store_true", default=True,
                        help="smooth keypoints with a Kalman filter (default; toggle live with k)")
    kalman.add_argument("--no-kalman", dest="kalman", action="store_false", help="show raw keypoints")
    parser.add_argument("--flip", action="store_true", help="flip test: average with the mirrored crop")
    parser.add_argument("--decode", choices=["dark", "quarter", "argmax"], default="dark",
                        help="heatmap decoding (dark: sub-pixel, default)")
    parser.add_argument("--threshold", type=float, default=0.3, help="draw joints scoring above this")
    parser.add_argument("--headless", action="store_true", help="never open a window (also when no display)")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar for files")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s: %(message)s")
    return run_command(lambda: _run(args), args.debug, hard_exit_on_interrupt=True)


def _run(args: argparse.Namespace) -> int:
    # The device decides the Keras backend, which must be set before anything imports keras.
    from app.device import choose_devices

    devices = choose_devices(args.device)  # DeviceError (exit 9) for a GPU that cannot be used
    if devices.note:
        print(devices.note, file=sys.stderr)

    # Cheap checks first, so a typo fails in a second rather than after loading two models.
    from app.demo import DemoOptions, check_outputs, display_available, run
    from app.pipeline import PipelineConfig
    from app.weights import read_sidecar, resolve_weights

    pipeline_config = PipelineConfig(detect_every=args.detect_every, kalman=args.kalman)
    options = DemoOptions(
        source=args.source, weights=args.weights, detector=args.detector, detector_conf=args.detector_conf,
        detector_imgsz=args.detector_size, runtime=args.runtime, output=args.output, json=args.json,
        overwrite=args.overwrite, headless=args.headless, flip=args.flip, decode=args.decode,
        threshold=args.threshold, max_frames=args.max_frames, progress=not args.no_progress,
        pipeline=pipeline_config,
    )
    weights = resolve_weights(args.weights)  # MissingWeightsError (exit 2) names the two ways to get them
    if read_sidecar(weights).get("trained") is False:
        print(f"warning: {weights} holds UNTRAINED weights (for tests): the keypoints mean nothing", file=sys.stderr)
    check_outputs(options)
    show = not args.headless and display_available()
    if not args.headless and not show:
        print("no display found: running headless (outputs are still written)", file=sys.stderr)

    from app.detector import DetectorConfig, PersonDetector
    from app.pipeline import PosePipeline
    from app.pose import PoseConfig, PoseEstimator
    from app.runtime import load_runner
    from app.sources import open_source

    source = open_source(args.source)
    try:
        detector = PersonDetector(DetectorConfig(model=args.detector, conf=args.detector_conf,
                                                 imgsz=args.detector_size, max_det=args.max_people,
                                                 device=devices.detector_device, half=args.half))
        runner = load_runner(weights, runtime=args.runtime, device=devices.pose_device, half=args.half)
        options.runs_on = _startup_line(weights, runner, detector)
        print(options.runs_on, file=sys.stderr)
        estimator = PoseEstimator(runner, PoseConfig(flip=args.flip, decode=args.decode))
        pipeline = PosePipeline(detector, estimator, pipeline_config)
    except BaseException:
        source.close()
        raise
    count = run(options, pipeline, source, show)
    print(f"{count} frames processed", file=sys.stderr)
    return 0


def _startup_line(weights, runner, detector) -> str:
    from pathlib import Path

    from app.device import startup_line
    from app.weights import read_sidecar

    info, (height, width) = read_sidecar(weights), runner.input_size
    model = f"SimpleBaseline-R{info['depth']}" if "depth" in info else Path(weights).name.split(".")[0]
    return startup_line(f"{model} {height}x{width}", runner.engine,
                        runner.device, runner.precision, Path(detector.config.model).name, detector.device,
                        detector.precision, detector.note)


if __name__ == "__main__":
    sys.exit(main())
