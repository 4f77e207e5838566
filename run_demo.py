"""Real-time top-down pose on a webcam, a video, an image or a folder of images.

    python run_demo.py                          # webcam 0
    python run_demo.py --source video.mp4 --output out.mp4 --json out.json

Keys in the window: q or Esc quits (so does closing the window), k toggles the Kalman smoothing,
space pauses, h shows the heatmaps the model predicts, c shows raw and smoothed keypoints together.
Errors print one line and exit with a status of their own (see README, Troubleshooting);
--debug shows the traceback instead.
"""

import argparse
import logging
import os
import re
import sys

os.environ.setdefault("YOLO_OFFLINE", "1")  # Ultralytics must not phone home from a demo
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter (cuInit on a CPU) is no error of ours

from app.device import device_argument  # noqa: E402  (light: no torch, no Keras)
from app.errors import run_command, stop_on_signals  # noqa: E402  (after the environment above)
from app.native_noise import native_noise_filtered  # noqa: E402


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _camera_size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise argparse.ArgumentTypeError(f"must be WIDTHxHEIGHT, e.g. 1280x720, got {text!r}")
    return int(match[1]), int(match[2])


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _fraction(text: str) -> float:
    """A number from 0 to 1 (a confidence or a score); NaN and inf are refused."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # False for NaN too
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value


DETECTOR_SIZES = (32, 4096)  # YOLO's stride is 32; beyond 4096 a frame would not fit in memory


def _detector_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of pixels, got {text!r}") from None
    low, high = DETECTOR_SIZES
    if not (low <= value <= high and value % 32 == 0):
        raise argparse.ArgumentTypeError(f"must be a multiple of 32 from {low} to {high} (e.g. 320, 640), got {value}")
    return value


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's default after its help, as argparse.ArgumentDefaultsHelpFormatter writes it,
    except where the help already says it (None means "chosen at run time") and after the second
    option of a pair (--no-kalman shares --kalman's default); the epilog as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS or "%(default)" in text \
                or isinstance(action, argparse._StoreFalseAction):
            return text
        if action.default is None:
            return text if "default" in text else text + " (default: none)"
        return text + " (default: %(default)s)"


EXIT_STATUSES = """\
exit statuses (README, Troubleshooting):
  0 done   1 unexpected error   2 bad command line   3 bad source   4 camera
  5 bad pose weights   6 detector   7 output (exists, cannot write, disk full, in use, same file)
  8 download   9 device   10 no pose weights yet   130 Ctrl-C   143 SIGTERM   129 SIGHUP
"""


class _Parser(argparse.ArgumentParser):
    """Its help ends with the window's keys (app.views.KEY_LEGEND, read only when help is shown:
    that import is not free) and the exit statuses."""

    def format_help(self) -> str:
        from app.views import KEY_LEGEND

        keys = "\n".join(f"  {key:<10}{action}" for key, action in KEY_LEGEND)
        self.epilog = f"keys in the window:\n{keys}\n\n{EXIT_STATUSES}"
        return super().format_help()


def parse_args(argv=None) -> argparse.Namespace:
    parser = _Parser(description="Real-time top-down human pose (YOLO + SimpleBaseline or HRNet).",
                     formatter_class=_HelpFormatter)
    parser.add_argument("--source", default="0",
                        help="camera index, video file, image, folder of images, or a stream URL "
                             "(rtsp://, rtmp://, http(s)://, tcp://, udp://)")
    parser.add_argument("--weights", default=None,
                        help="converted pose weights (.weights.h5); default: the newest in weights/")
    parser.add_argument("--model", choices=["r50", "mobilenetv2", "hrnet-w32", "hrnet-w48"], default=None,
                        help="the newest converted weights of this network in weights/: r50 (accurate) or "
                             "mobilenetv2 (about 3x faster on a CPU, AP 64.6 against 71.8), or HRNet "
                             "hrnet-w32 / hrnet-w48 (AP 74.6 / 75.6, slower)")
    parser.add_argument("--detector", default="yolov8n.pt",
                        help="any detector file Ultralytics loads (.pt, .onnx, .tflite, ...)")
    parser.add_argument("--detector-conf", type=_fraction, default=0.1,
                        help="lowest detection confidence kept; only boxes above 0.5 start a new person")
    parser.add_argument("--detector-size", type=_detector_size, default=640,
                        help="detector input size in pixels, a multiple of 32")
    parser.add_argument("--max-people", type=_positive_int, default=100,
                        help="follow at most this many people, the most confident (the model's time grows with each)")
    parser.add_argument("--detect-every", type=_positive_int, default=8,
                        help="run the detector every N frames, tracking by keypoints in between (1 = always)")
    parser.add_argument("--runtime", choices=["auto", "keras", "onnx", "openvino", "torch"], default="auto",
                        help="pose model runtime: auto picks torch (CUDA graphs) on an NVIDIA GPU, Keras on "
                             "Apple's; on a CPU OpenVINO unless ONNX Runtime measured faster for the network "
                             "(timed once, at the first start)")
    parser.add_argument("--device", type=device_argument, default="auto",
                        help="auto (a GPU torch sees, else the CPU), cpu, cuda, cuda:N or mps; both networks")
    parser.add_argument("--precision", choices=["auto", "f32", "bf16", "f16"], default="auto",
                        help="pose model arithmetic: auto (float32 on a CPU), f32, bf16 or f16; bf16/f16 only "
                             "where the device runs them natively (else float32, and a line saying so)")
    parser.add_argument("--half", action="store_true",
                        help="float16 for both networks where the device allows it (--precision f16 for the pose model)")
    parser.add_argument("--output", help="write the annotated video here: .mp4 (plays after any stop, even a "
                                         "kill) or .avi (MJPEG); for an image source an image (out.jpg) or, for "
                                         "a folder of images, a folder (out/)")
    parser.add_argument("--json", help="write every frame's people here (format: see app/outputs.py)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    kalman = parser.add_mutually_exclusive_group()
    kalman.add_argument("--kalman", dest="kalman", action="store_true", default=True,
                        help="smooth keypoints with a Kalman filter (toggle live with k)")
    kalman.add_argument("--no-kalman", dest="kalman", action="store_false", help="show raw keypoints")
    parser.add_argument("--smoothing", choices=["auto", "live", "offline"], default="auto",
                        help="offline: smooth each frame with the next 0.3 s too (no lag; output that "
                             "far behind); auto: offline for a video file written to --output/--json, else live")
    parser.add_argument("--flip", action="store_true", help="flip test: average with the mirrored crop")
    parser.add_argument("--decode", choices=["dark", "quarter", "argmax"], default="dark",
                        help="heatmap decoding (dark: sub-pixel)")
    parser.add_argument("--threshold", type=_fraction, default=0.3, help="draw joints scoring above this (0 to 1)")
    parser.add_argument("--headless", action="store_true", help="never open a window (also when no display)")
    # The window and the camera (issue 13).
    parser.add_argument("--record-view", action="store_true",
                        help="--output records exactly what the window shows (HUD, panels, mirror) "
                             "instead of the annotated frames only")
    parser.add_argument("--image-delay", type=_seconds, default=0.0,
                        help="seconds each still image stays in the window (0: until a key)")
    parser.add_argument("--camera-size", type=_camera_size, default=None, metavar="WxH",
                        help="frame size to ask of the camera, e.g. 1280x720 (it answers with its nearest mode)")
    parser.add_argument("--camera-fps", type=_positive_float, default=None,
                        help="frame rate to ask of the camera")
    mirror = parser.add_mutually_exclusive_group()
    mirror.add_argument("--mirror", dest="mirror", action="store_true", default=None,
                        help="show a mirror image (selfie view; default: for cameras only); the JSON "
                             "keeps the camera's own coordinates")
    mirror.add_argument("--no-mirror", dest="mirror", action="store_false", help="show the camera as it sees")
    parser.add_argument("--max-frames", type=_positive_int, default=None, help="stop after this many frames")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar for files")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.record_view and not args.output:
        print("warning: --record-view records into --output, which is not given; ignored", file=sys.stderr)
    return args


class LowerCaseLevelFormatter(logging.Formatter):
    """Log lines as `warning: ...`, `info: ...`: the level in lower case, like the lines the demo prints."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {super().format(record)}"


def main(argv=None) -> int:
    args = parse_args(argv)
    stop_on_signals()  # SIGTERM and SIGHUP close the outputs as Ctrl-C does
    # "warning: ..." as the demo's own lines and "error: ..." print it (logging's names are upper case).
    handler = logging.StreamHandler()
    handler.setFormatter(LowerCaseLevelFormatter("%(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, handlers=[handler])
    return run_command(lambda: _run(args), args.debug, hard_exit_on_interrupt=True)


def _run(args: argparse.Namespace) -> int:
    # Cheap checks first, in the order a user reads the command: every output path, the detector
    # file, the source (opened), then the pose weights; all before anything heavy is imported or
    # loaded, so a typo or a missing camera fails in a second rather than after loading two models.
    from app.outputs import check_distinct, check_output_path, check_video_path
    from app.sources import mask_url, open_source, url_scheme
    from app.stills import image_output_path, wants_images
    from app.weights import network_label, read_sidecar, resolve_weights

    images = wants_images(args.output)  # annotated images, not a video: checked once the source is known
    if args.output and not images:
        check_video_path(args.output)
    is_url = url_scheme(args.source) is not None
    source_file = (args.source if args.source and not is_url and os.path.isfile(os.path.expanduser(args.source))
                   else None)
    check_distinct({"--source": source_file, "--output": args.output, "--json": args.json})
    for path in (None if images else args.output, args.json):
        if path:
            check_output_path(path, args.overwrite)
    check_detector_file(args.detector)
    if is_url:  # the password in a URL is never printed: mask_url
        print(f"connecting to {mask_url(args.source)} ...", file=sys.stderr, flush=True)
    source = open_source(args.source, camera_size=args.camera_size, camera_fps=args.camera_fps)
    try:
        if images:
            image_output_path(args.output, source, args.overwrite)
        weights = resolve_weights(args.weights, model=args.model)  # MissingWeightsError names the two ways to get them
        info = read_sidecar(weights)  # checked by resolve_weights: network, joints, input size
        if info.get("trained") is False:
            print(f"warning: {weights} holds UNTRAINED weights (for tests): the keypoints mean nothing",
                  file=sys.stderr)
        return _load_and_run(args, weights, network_label(info), source, udp=info["udp"])
    finally:
        source.close()  # run() closes it too; this covers a model that fails to load


def check_detector_file(model: str) -> None:
    """DetectorError (exit 6) now, before anything loads, for a detector file that is missing or
    empty. A bare name that is not on disk (e.g. the default yolov8n.pt) is left to
    app.detector, which downloads the ones Ultralytics publishes when online."""
    from pathlib import Path

    from app.errors import DetectorError

    path = Path(model).expanduser()
    if path.is_file():
        if path.stat().st_size == 0:
            raise DetectorError(f"detector file {path} is empty (0 bytes); download it again or pass --detector PATH")
        return
    if path.exists():
        return  # a folder: app.detector says what it makes of it
    if len(path.parts) > 1 or path.suffix.lower() != ".pt":
        raise DetectorError(f"detector file {path.absolute()} not found; pass --detector PATH to a YOLO "
                            ".pt, .onnx or .tflite file")


def _load_and_run(args: argparse.Namespace, weights, network: str, source, udp: bool = False) -> int:
    """udp: the weights were trained with UDP's geometry (their JSON says so); crops and decoding follow."""
    # The device decides the Keras backend, which must be set before anything imports keras.
    from app.device import choose_devices

    devices = choose_devices(args.device)  # DeviceError (exit 9) for a GPU that cannot be used
    if devices.note:
        print(devices.note, file=sys.stderr)

    from app.demo import DemoOptions, run
    from app.pipeline import PipelineConfig
    from app.sources import mask_url
    from app.window import probe_display

    pipeline_config = PipelineConfig(detect_every=args.detect_every, kalman=args.kalman)
    options = DemoOptions(
        source=mask_url(args.source), weights=args.weights, detector=args.detector, detector_conf=args.detector_conf,
        detector_imgsz=args.detector_size, runtime=args.runtime, output=args.output, json=args.json,
        overwrite=args.overwrite, headless=args.headless, flip=args.flip, decode=args.decode,
        threshold=args.threshold, max_frames=args.max_frames, progress=not args.no_progress,
        pipeline=pipeline_config, smoothing=args.smoothing,
        record_view=args.record_view, image_delay=args.image_delay, mirror=args.mirror,
    )
    if (args.camera_size or args.camera_fps) and source.kind != "camera":
        print("warning: --camera-size and --camera-fps apply to cameras only; ignored", file=sys.stderr)
    display = None
    if not args.headless:
        display = probe_display()  # before any window: an unreachable display would abort the process
        if not display.ok:
            print(f"no usable display ({display.reason}): running headless, outputs are still written",
                  file=sys.stderr)

    print(f"{_describe(source)}; loading the detector ({os.path.basename(args.detector)}) and the pose "
          f"model ({weights.name}) ...", file=sys.stderr, flush=True)
    with native_noise_filtered(enabled=not args.debug):
        from app.detector import DetectorConfig, PersonDetector
        from app.device import hud_line
        from app.pipeline import PosePipeline
        from app.pose import PoseConfig, PoseEstimator
        from app.runtime import load_runner

        detector = PersonDetector(DetectorConfig(model=args.detector, conf=args.detector_conf,
                                                 imgsz=args.detector_size, max_det=args.max_people,
                                                 device=devices.detector_device,
                                                 half=args.half or args.precision == "f16"))
        runner = load_runner(weights, runtime=args.runtime, device=devices.pose_device, half=args.half,
                             precision=args.precision)
        print(_startup_line(network + (" UDP" if udp else ""), runner, detector), file=sys.stderr)
        for note in getattr(runner, "notes", ()):  # what --runtime auto picked; a precision not honoured
            print(note, file=sys.stderr)
        options.runs_on = hud_line(runner.device, runner.precision, detector.device)
        estimator = PoseEstimator(runner, PoseConfig(flip=args.flip, decode=args.decode, udp=udp))
        pipeline = PosePipeline(detector, estimator, pipeline_config)
    show = display is not None and display.ok
    count = run(options, pipeline, source, show, screen=display.screen if show else None)
    print(f"{count} frames processed", file=sys.stderr)
    return 0


def _describe(source) -> str:
    """One line on what was opened; for a camera, what it was asked and what it gave."""
    width, height = source.size
    text = f"{source.description}: {width}x{height} at {source.fps:g} fps"
    if getattr(source, "fourcc", ""):  # a camera's pixel format, e.g. MJPG after --camera-size
        text += f" {source.fourcc}"
    if source.frame_count and source.kind != "camera":
        unit = "image" if source.kind == "images" else "frame"
        text += f", {source.frame_count} {unit}{'s' if source.frame_count != 1 else ''}"
    asked_size, asked_fps = getattr(source, "requested", (None, None))
    if asked_size is not None or asked_fps is not None:
        asked = " at ".join(part for part in (f"{asked_size[0]}x{asked_size[1]}" if asked_size else "",
                                              f"{asked_fps:g} fps" if asked_fps else "") if part)
        text += f" (asked for {asked})"
    return text


def _startup_line(network: str, runner, detector) -> str:
    """network: app.weights.network_label of the weights, e.g. "SimpleBaseline-R50"."""
    from pathlib import Path

    from app.device import startup_line

    height, width = runner.input_size
    return startup_line(f"{network} {height}x{width}", runner.engine,
                        runner.device, runner.precision, Path(detector.config.model).name, detector.device,
                        detector.precision, detector.note)


if __name__ == "__main__":
    code = main()
    # Leave without the interpreter's teardown of TensorFlow, torch and ONNX Runtime (over a second):
    # the outputs are closed by now, and closing the window means the program ends now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
