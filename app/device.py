"""Where the two networks run: the device and the Keras backend, chosen before Keras is imported.

    choice = choose_devices("auto")         # in run_demo.py, before anything imports keras
    choice.pose_device, choice.detector_device, choice.backend, choice.note

Why the backend is chosen here: with the pinned wheels TensorFlow 2.21 is built for CUDA 12 and
torch 2.14 for CUDA 13, so on an NVIDIA machine TensorFlow finds no GPU while torch (and Keras on
its torch backend, and Ultralytics) does. Keras reads KERAS_BACKEND once, at its first import, so
the choice must be made before that. The rules:

- the device comes from what torch sees: "auto" is cuda:0, else Apple's mps, else the CPU;
  an explicit "cuda", "cuda:N" or "mps" that torch cannot use is a DeviceError (one line, exit 9);
- on a GPU, without KERAS_BACKEND set, Keras runs on its torch backend (one CUDA stack in the
  process, the one Ultralytics uses) and KERAS_TORCH_DEVICE names the device;
- a user's KERAS_BACKEND always wins; when that backend cannot use the GPU the user asked for,
  an explicit --device is a DeviceError and "auto" falls back to the CPU with one line saying so;
- on the CPU nothing is set (but KERAS_TORCH_DEVICE=cpu under a user's torch backend): the pose
  model runs on ONNX Runtime as before (app.runtime).

Plain functions over plain values, so the tests fake what torch sees (Availability) and what a
user's backend sees (`sees_gpu`) without a GPU.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from dataclasses import dataclass, field

from app.errors import DeviceError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
_DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEFAULT_KERAS_BACKEND = "tensorflow"  # Keras' own default when neither KERAS_BACKEND nor keras.json says


@dataclass(frozen=True)
class Availability:
    """What torch sees: CUDA devices (count and names) and Apple's MPS."""

    cuda_names: tuple[str, ...] = ()
    mps: bool = False
    torch_version: str = ""
    torch_cuda: str | None = None  # the CUDA version torch was built for (None: a CPU-only build)


def torch_availability() -> Availability:
    """Asks torch (imported here: it is installed with Ultralytics anyway)."""
    import torch

    with warnings.catch_warnings():
        # torch's CUDA wheels warn when they find no NVIDIA driver; here that is an answer, not a problem.
        warnings.filterwarnings("ignore", message="CUDA initialization", category=UserWarning)
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        names = tuple(torch.cuda.get_device_name(i) for i in range(count))
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return Availability(cuda_names=names, mps=mps, torch_version=torch.__version__.split("+")[0],
                        torch_cuda=torch.version.cuda)


def parse_device(text: str) -> str:
    """The --device value, lower-cased and checked: "auto", "cpu", "cuda", "cuda:N" or "mps"."""
    device = text.strip().lower()
    if not _DEVICE_PATTERN.fullmatch(device):
        raise ValueError(f"device must be {DEVICE_CHOICES}, got {text!r}")
    return device


def device_argument(text: str) -> str:
    """parse_device for argparse's `type=` (run_demo.py and app.evaluate's --device): a bad value is
    argparse's one-line usage error."""
    import argparse

    try:
        return parse_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def resolve_device(requested: str, available: Availability) -> str:
    """"auto" | "cpu" | "cuda" | "cuda:N" | "mps" -> the device both networks use: "cpu", "cuda:N" or "mps".

    Raises DeviceError for a GPU torch cannot use, naming what it sees and what to do.
    """
    requested = parse_device(requested)
    count = len(available.cuda_names)
    if requested == "auto":
        return "cuda:0" if count else "mps" if available.mps else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested == "mps":
        if not available.mps:
            raise DeviceError("--device mps: torch sees no Apple GPU (MPS needs macOS 12.3+ on Apple silicon); "
                              "use --device auto or --device cpu")
        return "mps"
    index = int(requested.partition(":")[2] or 0)
    if count == 0:
        build = (f"torch {available.torch_version} is built for CUDA {available.torch_cuda}" if available.torch_cuda
                 else f"torch {available.torch_version} is a CPU-only build")
        raise DeviceError(f"--device {requested}: torch sees no CUDA GPU ({build}); check that `nvidia-smi` "
                          "lists the GPU and the driver supports that CUDA version, or use --device cpu")
    if index >= count:
        seen = "1 CUDA GPU (cuda:0)" if count == 1 else f"{count} CUDA GPUs (cuda:0 to cuda:{count - 1})"
        raise DeviceError(f"--device {requested}: torch sees {seen}; pick one of those")
    return f"cuda:{index}"


def backend_sees_gpu(backend: str) -> bool:
    """Whether a Keras backend other than torch can run on a GPU here (imports that framework)."""
    if backend == "tensorflow":
        try:
            import tensorflow as tf
        except ImportError:
            return False
        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        try:
            import jax
        except ImportError:
            return False
        return jax.default_backend() != "cpu"
    return False  # numpy and openvino run on the CPU


@dataclass(frozen=True)
class DeviceChoice:
    """Where each network runs and the environment that makes Keras agree.

    pose_device: where a Keras pose model runs ("cpu", "cuda:N", "mps"); on "cpu" --runtime auto
    picks ONNX Runtime. detector_device: where the (torch) detector runs. backend: the Keras backend
    that will be imported. env: variables to set before that import. note: a line to show the user
    (a fallback), or "".
    """

    pose_device: str
    detector_device: str
    backend: str
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""


def choose_backend(requested: str, available: Availability, environ: dict | None = None,
                   sees_gpu=None) -> DeviceChoice:
    """The device for both networks and the Keras backend, from --device, what torch sees and the
    user's environment (os.environ when None). sees_gpu(backend) -> bool: whether a backend other
    than torch runs on a GPU here (default backend_sees_gpu, which imports it). Raises DeviceError
    as resolve_device, and when the user's KERAS_BACKEND cannot use an explicitly asked GPU.
    Sets nothing: see apply_choice."""
    environ = os.environ if environ is None else environ
    sees_gpu = sees_gpu or backend_sees_gpu
    device = resolve_device(requested, available)
    user_backend = environ.get("KERAS_BACKEND", "").strip().lower()
    if device == "cpu":
        # Keras' torch backend would pick a GPU by itself: keep it where the user asked.
        env = {"KERAS_TORCH_DEVICE": "cpu"} if user_backend == "torch" else {}
        return DeviceChoice("cpu", "cpu", user_backend or DEFAULT_KERAS_BACKEND, env=env)
    if user_backend in ("", "torch"):
        return DeviceChoice(device, device, "torch", env={"KERAS_BACKEND": "torch", "KERAS_TORCH_DEVICE": device})
    # The user's backend wins; it must see the GPU itself (TensorFlow and JAX bring their own CUDA).
    why = None
    if device == "mps" and user_backend != "tensorflow":
        why = f"KERAS_BACKEND={user_backend} has no Apple GPU support"
    elif device not in ("cuda:0", "mps"):
        why = (f"KERAS_BACKEND={user_backend} runs on its first GPU only; "
               f"set CUDA_VISIBLE_DEVICES={device.partition(':')[2]} instead of --device {device}")
    elif not sees_gpu(user_backend):
        why = f"KERAS_BACKEND={user_backend} sees no GPU while torch sees {device}"
        if user_backend == "tensorflow":
            why += " (TensorFlow 2.21 needs CUDA 12; the pinned torch brings CUDA 13)"
    if why is None:
        return DeviceChoice(device, device, user_backend)
    fix = "unset KERAS_BACKEND (or set KERAS_BACKEND=torch) to run the pose model on the GPU"
    if parse_device(requested) != "auto":
        raise DeviceError(f"--device {requested}: {why}; {fix}, or use --device cpu")
    return DeviceChoice("cpu", device, user_backend,
                        note=f"note: pose model on the CPU: {why}; {fix}")


def apply_choice(choice: DeviceChoice, environ: dict | None = None) -> None:
    """Sets choice.env in the environment; refuses when Keras is already imported with another backend
    (the backend cannot change in a running process, so that would be a bug of the caller's order)."""
    environ = os.environ if environ is None else environ
    if "keras" in sys.modules and choice.env.get("KERAS_BACKEND"):
        active = sys.modules["keras"].backend.backend()
        if active != choice.env["KERAS_BACKEND"]:
            raise RuntimeError(f"Keras was imported (backend {active}) before the device was chosen; "
                               "call choose_devices before anything imports keras")
    environ.update(choice.env)


def choose_devices(requested: str = "auto", environ: dict | None = None) -> DeviceChoice:
    """choose_backend with what torch sees, then apply_choice: call before Keras is imported."""
    choice = choose_backend(requested, torch_availability(), environ)
    apply_choice(choice, environ)
    return choice


def startup_line(model: str, engine: str, pose_device: str, pose_precision: str,
                 detector: str, detector_device: str, detector_precision: str = "float32",
                 detector_note: str = "") -> str:
    """The one line that says where each network runs, e.g.
    "pose model: SimpleBaseline-R50 256x192, Keras 3.15.1 (torch backend), cuda:0, float16; detector: yolov8n.pt, cuda:0, float16"
    """
    detector_part = f"{detector}, {detector_device}, {detector_precision}"
    if detector_note:
        detector_part += f" ({detector_note})"
    return f"pose model: {model}, {engine}, {pose_device}, {pose_precision}; detector: {detector_part}"


def hud_line(pose_device: str, pose_precision: str, detector_device: str) -> str:
    """The start-up line's gist for the window's HUD, short enough not to cover the picture, e.g.
    "pose cuda:0 float16, detector cuda:0"."""
    return f"pose {pose_device} {pose_precision}, detector {detector_device}"
