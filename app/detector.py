"""Person boxes from an Ultralytics YOLO detector: a .pt, .onnx or .tflite file or an OpenVINO export
folder (the formats that cannot run code: FILE_FORMATS).

    detector = PersonDetector(DetectorConfig(model="../shared/assets/detector/yolov8n_int8.tflite"))
    boxes, scores = detector.detect(frame_bgr)      # (N, 4) xyxy pixels, (N,), best first

Ultralytics does several things at import and first predict that a demo must not inherit, so this
module takes control of them (checked against ultralytics 8.4 in site-packages):

- Network: `ultralytics/utils/__init__.py` resolves two DNS names at import (`ONLINE = is_online()`),
  which enables its analytics (`utils/events.py`, also gated by settings "sync") and error reports;
  `YOLO_OFFLINE=1` makes `is_online()` return False, so both stay off and a failed download fails
  at once instead of retrying. `YOLO_AUTOINSTALL=0` stops it pip-installing missing backends at
  run time. Both are set (unless the user set them) before the first import. The settings file is
  left alone (changing "sync" there would rewrite the user's global Ultralytics settings).
- Threads: importing `ultralytics.utils` calls `cv2.setNumThreads(0)` (OpenCV single-threaded), and
  the first predict calls `select_device()` (`utils/torch_utils.py`), which runs
  `torch.set_num_threads(NUM_THREADS)` with NUM_THREADS = cpu_count - 1 (1 on a 2-core machine).
  Both counts are saved before the import and restored after it and after every predict, or torch's
  is set to `DetectorConfig.threads` when given. Its numpy print options are put back too.
  The LiteRT backend (`nn/backends/litert.py`) gives its interpreter NUM_THREADS threads, read from
  its module at load time: on 2 cores that is 1 thread, 112 ms per 640 frame against 60 ms with 2
  (measured here), so it is set to `threads` (default: all cores) before the model loads.
- Missing files: a bare known name such as "yolov8n.pt" that is not on disk makes Ultralytics
  download it; a path with a folder makes it download into that folder. Here a missing file is an
  error at once, except a bare known name when the download host answers within a second or two.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from app.errors import DetectorError

log = logging.getLogger(__name__)

PERSON_CLASS = 0  # COCO class 0
DOWNLOAD_HOST = ("github.com", 443)  # where Ultralytics fetches its release assets
NETWORK_TIMEOUT_S = 2.0


@dataclass
class DetectorConfig:
    """model: a detector file, or a bare Ultralytics name (e.g. "yolov8n.pt") to download when online.
    threads: torch intra-op threads to keep after Ultralytics changes them; None keeps the caller's."""

    model: str = "yolov8n.pt"
    # Low on purpose: weak boxes keep a tracked person alive through a hard pose, and the tracker
    # lets only boxes above its min_new_score (0.5) start a new person (ByteTrack's two thresholds).
    conf: float = 0.1
    iou: float = 0.5
    imgsz: int = 640
    # "cpu", "cuda:N" or "mps" (app.device resolves --device). Formats that cannot use it run on the
    # CPU anyway and say so in `PersonDetector.note` (see detector_device).
    device: str = "cpu"
    half: bool = False  # float16 where the format and device allow it (torch .pt on a GPU)
    # Boxes kept per frame, highest scores first (Ultralytics' max_det): run_demo's --max-people. A
    # person is only ever followed through a box of the frame's last detection, so it caps people too.
    max_det: int = 100
    # A second box on the same person (often just the upper body) survives IoU-NMS because half a
    # box has IoU about 0.5 with the whole; drop a box lying this much inside a higher-scoring box of
    # nearly the same width (a person partly behind another has a different width and stays).
    nested_overlap: float = 0.85
    threads: int | None = None
    # A .pt detector on the CPU runs as Ultralytics' own OpenVINO export of it, made once and kept
    # beside it (openvino_detector): several times faster than torch on the CPU (docs/benchmarks.md,
    # issue 18). False: the .pt through torch, as before.
    cpu_openvino: bool = True


# Formats Ultralytics runs with torch itself, on any torch device.
TORCH_FORMATS = (".pt",)
# Detector files whose loading runs nothing from the file: ONNX and LiteRT graphs are data their
# runtimes interpret with built-in operators, and a .pt is a pickle that check_pickle reads first.
# Refused, as a .pt that carries code is: TorchScript (a program torch.jit.load compiles and runs;
# PyTorch's SECURITY.md: treat it as code from its source), TensorFlow graphs (.pb; TensorFlow's
# SECURITY.md: models are programs, with file and system operations) and every format this project
# does not install a runtime for. OpenVINO export folders (.xml and .bin: data) are taken as well.
FILE_FORMATS = (".pt", ".onnx", ".tflite")
CODE_FORMATS = {".torchscript": "TorchScript, a program torch.jit.load runs",
                ".pb": "a TensorFlow graph, a program that may call file and system operations"}


def detector_device(model: str, device: str) -> tuple[str, str]:
    """Where Ultralytics will run this detector file when asked for `device`: (device, why not the
    one asked, or ""). Torch formats run where asked; ONNX on a GPU only with onnxruntime-gpu (the
    pinned onnxruntime is CPU-only); LiteRT (.tflite) and the rest of Ultralytics' export formats
    here run on the CPU: saying so beats failing, since the detector is the smaller network."""
    if device == "cpu":
        return "cpu", ""
    suffix = Path(model).suffix.lower()
    if suffix in TORCH_FORMATS:
        return device, ""
    if suffix == ".onnx" and device.startswith("cuda"):
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            return device, ""
        return "cpu", "ONNX Runtime here has no CUDA provider; a .pt detector runs on the GPU"
    kind = "LiteRT" if suffix == ".tflite" else f"a {suffix or 'model'} file"
    return "cpu", f"{kind} runs on the CPU; a .pt detector runs on the GPU"


def network_reachable(host: tuple[str, int] = DOWNLOAD_HOST, timeout_s: float = NETWORK_TIMEOUT_S) -> bool:
    """True if a TCP connection to `host` opens within `timeout_s`, DNS lookup included."""
    result = []

    def connect():
        try:
            socket.create_connection(host, timeout=timeout_s).close()
            result.append(True)
        except OSError:
            pass

    # getaddrinfo ignores socket timeouts and can hang for long on a machine without DNS, so the
    # whole attempt runs in a thread we stop waiting for.
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result)


# Ultralytics' settings here (where the user has not set them): no network, no pip; and
# ULTRALYTICS_SAFE_LOAD: its own loader unpickles a .pt with weights_only=False unless this is set;
# with it, its load is restricted too (behind check_pickle's, should the file change between the two).
ULTRALYTICS_ENV = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0", "ULTRALYTICS_SAFE_LOAD": "1"}


def _import_yolo():
    """ultralytics.YOLO and its set of downloadable asset names, imported with the network off."""
    for name, value in ULTRALYTICS_ENV.items():
        os.environ.setdefault(name, value)
    from ultralytics import YOLO
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    return YOLO, GITHUB_ASSETS_NAMES


def _first_line(error: BaseException) -> str:
    """The first line of an Ultralytics error, without its "ERROR ❌️" decoration."""
    text = str(error).replace("❌️", "").replace("❌", "").strip()
    text = text.removeprefix("ERROR").strip() or type(error).__name__
    return text.splitlines()[0].rstrip(".")


def _litert_precision(model, default: str) -> str:
    """"int8" for a LiteRT detector whose weights are int8 (Ultralytics' `int8=True` export keeps
    float inputs and outputs, so only its tensors tell), else `default`."""
    interpreter = getattr(getattr(getattr(getattr(model, "predictor", None), "model", None), "backend", None),
                          "interpreter", None)
    if interpreter is None:  # another Ultralytics layout: say nothing rather than something wrong
        return default
    dtypes = {np.dtype(detail["dtype"]) for detail in interpreter.get_tensor_details()}
    return "int8" if np.dtype(np.int8) in dtypes else default


def check_format(path: Path) -> None:
    """Refuses a detector file of a format that can carry code or that nothing here runs (FILE_FORMATS
    says why): DetectorError, one line, before anything reads it."""
    suffix = path.suffix.lower()
    if suffix in FILE_FORMATS:
        return
    what = CODE_FORMATS.get(suffix, f"a {suffix} file" if suffix else "a file without a suffix")
    raise DetectorError(f"detector {path} is {what}; this demo loads only detectors that cannot run code: "
                        "a .pt saved by Ultralytics (checked before it loads), an .onnx or .tflite file, or "
                        "an OpenVINO export folder (`yolo export model=yolov8n.pt format=onnx` makes the .onnx)")


def check_pickle(path: Path) -> None:
    """Refuses a .pt detector whose pickle asks for anything an Ultralytics checkpoint does not hold
    (app.safe_pickle), before Ultralytics unpickles it: DetectorError, one line."""
    from app.safe_pickle import DamagedPickle, RefusedPickle, globals_in, load_restricted, ultralytics_allowed

    try:
        load_restricted(path, ultralytics_allowed(globals_in(path)))
    except RefusedPickle as refused:
        raise DetectorError(f"detector {path} holds Python objects ({refused}) that could run code when loaded; "
                            "refusing it: use a .pt saved by Ultralytics, or an .onnx or .tflite export") from None
    except DamagedPickle as damage:
        raise DetectorError(f"detector {path} is truncated or not an Ultralytics checkpoint ({damage}); "
                            "download or export it again") from None
    except PermissionError:
        raise DetectorError(f"cannot read detector {path}: permission denied; check the file's permissions") from None


class PersonDetector:
    """Loads the detector once (and runs it once on a blank frame, so an unreadable file fails
    here, not on the first video frame); `detect(frame)` returns the people in one frame."""

    def __init__(self, config: DetectorConfig | None = None):
        config = config or DetectorConfig()
        # Where it really runs: `.device`, `.precision` and `.note` feed the start-up line.
        self.device, self.note = detector_device(config.model, config.device)
        self.precision = "float16" if config.half and self.device != "cpu" and \
            Path(config.model).suffix.lower() in TORCH_FORMATS else "float32"
        self.config = config
        self._torch_threads = config.threads or torch.get_num_threads()
        self._cv2_threads = cv2.getNumThreads()
        print_options = np.get_printoptions()  # Ultralytics also reformats every numpy float printed
        try:
            YOLO, known_names = _import_yolo()
        finally:
            self._restore_threads()
            np.set_printoptions(**print_options)
        path = self._check_model(config.model, known_names)
        if config.cpu_openvino and self.device == "cpu" and Path(path).suffix.lower() == ".pt":
            path, self.note = openvino_detector(Path(path), config.imgsz, self.note)
        if is_openvino_folder(Path(path)):
            self.precision = openvino_folder_precision(Path(path))
        self._set_litert_threads(config.threads or os.cpu_count() or 1)
        from ultralytics.utils import LOGGER

        level = LOGGER.level
        LOGGER.setLevel(logging.WARNING)  # "Loading x for LiteRT inference..." ignores verbose=False
        try:
            self._model = YOLO(path, task="detect", verbose=False)
            self.detect(np.zeros((64, 64, 3), np.uint8))  # loads the backend; surfaces bad files now
        except Exception as error:
            raise DetectorError(f"Ultralytics cannot read detector {config.model} ({_first_line(error)}); "
                                "pass --detector PATH to a YOLO .pt, .onnx or .tflite file") from error
        finally:
            LOGGER.setLevel(level)
        if Path(config.model).suffix.lower() == ".tflite":
            self.precision = _litert_precision(self._model, self.precision)
        # (H, W) it really runs at: an export with a fixed input (a .tflite, an .onnx or OpenVINO
        # export made without dynamic shapes) runs at its own size whatever imgsz asks, and
        # Ultralytics says nothing; the start-up line does.
        size = getattr(getattr(self._model, "predictor", None), "imgsz", None) or config.imgsz
        self.input_size = tuple(int(v) for v in (size if isinstance(size, (list, tuple)) else (size, size)))
        if self.input_size != (config.imgsz, config.imgsz):
            height, width = self.input_size
            fixed = f"input fixed at {height}x{width}: --detector-size {config.imgsz} does not apply"
            self.note = f"{self.note}; {fixed}" if self.note else fixed
        names = getattr(self._model, "names", None) or {}
        if names.get(PERSON_CLASS, "person") != "person":
            log.warning("detector %s calls class 0 %r, not 'person'; its boxes may not be people",
                        config.model, names[PERSON_CLASS])

    @staticmethod
    def _check_model(model: str, known_names) -> str:
        path = Path(model).expanduser()
        if path.is_file():
            if path.stat().st_size == 0:
                raise DetectorError(f"detector file {path} is empty (0 bytes); download it again "
                                    "or pass --detector PATH")
            check_format(path)
            if path.suffix.lower() == ".pt":
                check_pickle(path)
            return str(path)
        if is_openvino_folder(path):  # Ultralytics' OpenVINO export: a folder with the .xml and .bin
            return str(path)
        if path.exists():
            raise DetectorError(f"detector {path} is a folder; pass --detector PATH to a model file")
        if model in known_names:  # a bare name Ultralytics knows how to download
            if network_reachable():
                log.info("%s is not on disk; Ultralytics will download it", model)
                return model
            raise DetectorError(f"{model} is not on disk and this machine is offline; download it on a "
                                "connected machine, or pass --detector PATH to a local detector file")
        raise DetectorError(f"detector file {path} not found; pass --detector PATH to a YOLO model file")

    @staticmethod
    def _set_litert_threads(threads: int) -> None:
        try:
            from ultralytics.nn.backends import litert
        except ImportError:  # another Ultralytics layout: keep its own choice
            return
        if hasattr(litert, "NUM_THREADS"):
            litert.NUM_THREADS = threads

    def _restore_threads(self) -> None:
        torch.set_num_threads(self._torch_threads)
        cv2.setNumThreads(self._cv2_threads)

    def detect(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """People in one uint8 BGR (H, W, 3) frame: boxes (N, 4) xyxy float32 in frame pixels and
        scores (N,) float32, highest score first; N = 0 for an empty frame."""
        if frame_bgr.size == 0:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        cfg = self.config
        # Ultralytics 8.4 spells float16 `quantize=16` (its `half` is deprecated); only passed when
        # wanted, so float32 runs exactly as before.
        precision = {"quantize": 16} if self.precision == "float16" else {}
        try:
            with warnings.catch_warnings():
                # torch's CUDA wheels warn on every machine without an NVIDIA driver when Ultralytics
                # asks whether CUDA is there; on a CPU that is the expected answer, not a problem.
                warnings.filterwarnings("ignore", message="CUDA initialization", category=UserWarning)
                result = self._model.predict(frame_bgr, classes=[PERSON_CLASS], conf=cfg.conf, iou=cfg.iou,
                                             imgsz=cfg.imgsz, device=self.device, max_det=cfg.max_det,
                                             verbose=False, **precision)[0]
        finally:
            self._restore_threads()
        boxes = result.boxes
        xyxy = boxes.xyxy.cpu().numpy().astype(np.float32).reshape(-1, 4)
        scores = boxes.conf.cpu().numpy().astype(np.float32).reshape(-1)
        return suppress_nested(xyxy, scores, cfg.nested_overlap)

    __call__ = detect


def suppress_nested(boxes: np.ndarray, scores: np.ndarray, overlap: float,
                    width_ratio: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Merges boxes that are one person: when `overlap` of a box's area lies inside another box whose
    width is within `width_ratio` of its own, the smaller one (usually an upper body) goes and the
    larger (the whole person, which the pose crop needs) keeps the higher of the two scores.

    boxes: (N, 4) xyxy; scores: (N,). Returns (boxes (M, 4), scores (M,)), highest score first.
    Pure numpy: Ultralytics' NMS only knows IoU.
    """
    widths = np.clip(boxes[:, 2] - boxes[:, 0], 0, None)
    areas = widths * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    inter_w = np.clip(np.minimum(boxes[:, None, 2], boxes[None, :, 2]) - np.maximum(boxes[:, None, 0], boxes[None, :, 0]), 0, None)
    inter_h = np.clip(np.minimum(boxes[:, None, 3], boxes[None, :, 3]) - np.maximum(boxes[:, None, 1], boxes[None, :, 1]), 0, None)
    inside = inter_w * inter_h / np.maximum(areas[:, None], 1e-6)  # [i, j]: share of box i inside box j
    similar = np.minimum(widths[:, None], widths[None, :]) >= width_ratio * np.maximum(widths[:, None], widths[None, :])
    nested = (inside >= overlap) & similar & (areas[:, None] < areas[None, :])  # i is a part of larger j
    scores = scores.copy()
    for i, j in zip(*np.nonzero(nested)):
        scores[j] = max(scores[j], scores[i])
    keep = ~nested.any(axis=1)
    order = np.argsort(-scores[keep], kind="stable")
    return boxes[keep][order], scores[keep][order]


# --- the detector through OpenVINO on the CPU (issue 18) -------------------------------------------

OPENVINO_KEY_FILE = "pose_export_key.txt"  # ours, inside Ultralytics' export folder


def is_openvino_folder(path: Path) -> bool:
    """An Ultralytics OpenVINO export: a folder (named <model>_openvino_model) holding a model .xml
    and its .bin of weights."""
    return path.is_dir() and any(xml.with_suffix(".bin").is_file() for xml in path.glob("*.xml"))


def openvino_folder_precision(folder: Path, flags=None) -> str:
    """What an OpenVINO export runs in on this CPU: "int8" for an int8 export (Ultralytics names it
    <model>_int8_openvino_model), else bfloat16 where the CPU has it (OpenVINO's CPU default there:
    Ultralytics sets no precision), else float32."""
    from app.runtime.precision import cpu_flags, native_precisions

    if "_int8_" in f"_{folder.name}_":
        return "int8"
    return "bfloat16" if "bfloat16" in native_precisions(cpu_flags() if flags is None else flags) else "float32"


def openvino_export_path(pt_path: Path) -> Path:
    """yolov8n.pt -> yolov8n_openvino_model/ beside it: the name Ultralytics itself gives the export."""
    return pt_path.with_name(f"{pt_path.stem}_openvino_model")


def openvino_export_key(pt_path: Path, imgsz: int) -> str:
    """What a cached export must have been made from: this .pt, this input size, these versions."""
    import openvino
    import ultralytics

    digest = hashlib.sha256(pt_path.read_bytes()).hexdigest()
    return (f"sha256 {digest}; imgsz {imgsz}; ultralytics {ultralytics.__version__}; "
            f"openvino {openvino.__version__.split('-')[0]}")


# Ultralytics' OpenVINO export, run in a fresh interpreter: argv[1] the .pt (a checked copy),
# argv[2] the input size. float32 IR (`quantize=None`: its `half`/`int8` are deprecated), static shape.
_EXPORT_SCRIPT = """
import sys
from ultralytics import YOLO
YOLO(sys.argv[1], task="detect", verbose=False).export(
    format="openvino", imgsz=int(sys.argv[2]), quantize=None, dynamic=False, verbose=False)
"""
EXPORT_TIMEOUT_S = 600.0


def export_openvino_detector(pt_path: Path, imgsz: int) -> Path:
    """Ultralytics' OpenVINO export (float32 IR, static imgsz x imgsz input) of a .pt detector,
    made once and kept beside it as <name>_openvino_model/; made again when the .pt, the size or
    a version changes.

    The export runs in a child process. OpenVINO's converter takes its TensorFlow path whenever
    `tensorflow` is already imported (a test process, a script that loaded Keras first), and on
    Python 3.13 that path fails for every model (`name 'tensorflow' is not defined`: its
    exec("import tensorflow") and exec("del tensorflow") in one function no longer share locals,
    PEP 667); a child also keeps Ultralytics' changes to torch's threads, its logger and numpy's
    print options out of this process.

    Atomic: the export is made in a hidden folder beside the .pt (from a copy of it, since
    Ultralytics writes next to the file it loaded) and renamed into place whole, so a reader never
    sees half an export; an interrupted export leaves at most that hidden folder, which is removed.
    Raises RuntimeError with the child's last error line when the export fails.
    """
    final = openvino_export_path(pt_path)
    key = openvino_export_key(pt_path, imgsz)
    with contextlib.suppress(OSError):
        if (final / OPENVINO_KEY_FILE).read_text() == key and is_openvino_folder(final):
            return final
    work = pt_path.with_name(f".{pt_path.stem}.{uuid.uuid4().hex[:12]}.part")
    work.mkdir()
    try:
        copy = work / pt_path.name
        shutil.copyfile(pt_path, copy)
        env = {**ULTRALYTICS_ENV, **os.environ}  # the .pt passed check_pickle before it got here
        try:
            done = subprocess.run([sys.executable, "-c", _EXPORT_SCRIPT, str(copy), str(imgsz)], cwd=work,
                                  env=env, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"the export took over {EXPORT_TIMEOUT_S:.0f} s") from None
        produced = openvino_export_path(copy)
        if done.returncode != 0 or not is_openvino_folder(produced):
            lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
            raise RuntimeError(lines[-1] if lines else f"the export ended with status {done.returncode}")
        (produced / OPENVINO_KEY_FILE).write_text(key)
        if final.exists():
            os.replace(final, work / "previous")  # a folder cannot be replaced by rename while it exists
        os.replace(produced, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def openvino_detector(pt_path: Path, imgsz: int, note: str = "") -> tuple[str, str]:
    """(the model to load, the start-up note) for a .pt detector on the CPU: its OpenVINO export
    when OpenVINO is installed and the export works, else the .pt itself with a note saying why."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return str(pt_path), _join(note, "OpenVINO is not installed: the .pt runs through torch")
    try:
        folder = export_openvino_detector(pt_path, imgsz)
    except Exception as error:  # Ultralytics and OpenVINO raise many types; the .pt still works
        log.warning("cannot export %s to OpenVINO (%s); running the .pt through torch", pt_path, _first_line(error))
        return str(pt_path), _join(note, f"OpenVINO export failed ({_first_line(error)}): the .pt runs through torch")
    return str(folder), _join(note, f"OpenVINO export {folder.name}")


def _join(note: str, more: str) -> str:
    return f"{note}; {more}" if note else more
