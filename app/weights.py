"""Trained SimpleBaseline weights: convert PyTorch checkpoints to Keras, download the MMPose ones, load.

    python -m app.weights download [NAME]        # an MMPose model-zoo checkpoint, verified, converted
    python -m app.weights download NAME --accept-unverified  # one whose sha256 does not match its name
    python -m app.weights convert SRC.pth [DST]  # a checkpoint you already have

A converted model is two files in weights/: `<name>.weights.h5` (Keras weights) and `<name>.json`
(source, its sha256, backbone and depth or widen_factor, num_joints, input_size), which
`load_pose_model` builds the network from.

Two networks convert, told apart by their keys (infer_network): SimpleBaseline-ResNet
(models/simple_baseline.py) and SimpleBaseline-MobileNetV2 (models/mobilenet_v2.py, MMPose's
`mobilenetv2_coco_*`: `backbone.conv1.conv.weight`, `backbone.layer1.0.conv.0.conv.weight`, ...).
Checkpoints come in two layouts, both mapped key by key onto the Keras layers:
- Microsoft (microsoft/human-pose-estimation.pytorch): a bare state_dict, `conv1.weight`,
  `layer1.0.conv1.weight`, `deconv_layers.0.weight`, `final_layer.weight`; `module.` in front when it
  was saved from nn.DataParallel.
- MMPose 0.x: {'state_dict': {'backbone.<as above>', 'keypoint_head.deconv_layers.*',
  'keypoint_head.final_layer.*'}, 'meta': ...}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import pickletools
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
import warnings
import zipfile
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

import numpy as np
from tqdm import tqdm

from app.errors import DownloadError, MissingWeightsError, WeightsError, run_command
# keras, torch and the model are imported where they are used: finding the weights file (what
# run_demo checks first) then needs neither TensorFlow nor torch, and fails or passes in a blink.

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_INPUT_SIZE = (256, 192)
KERAS_SUFFIX = ".weights.h5"

DOWNLOAD_HINT = "python -m app.weights download"
CONVERT_HINT = "python -m app.weights convert FILE.pth"


@dataclass(frozen=True)
class ZooCheckpoint:
    """One SimpleBaseline checkpoint of the MMPose 0.x model zoo (trained on COCO train2017)."""

    url: str
    input_size: tuple[int, int]  # (H, W)
    coco_ap: float  # COCO val2017 AP, person boxes from a detector with 56.4 person AP


# From open-mmlab/mmpose @ 186742d3df5a7f82af2a02f968110b07467a00da,
# configs/legacy/body/2d_kpt_sview_rgb_img/topdown_heatmap/coco/resnet_coco.md.
# The 8 hex characters after the last '-' of each file name start the file's sha256.
MODEL_ZOO = {
    "res50_coco_256x192": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res50_coco_256x192-ec54d7f3_20200709.pth",
        (256, 192), 0.718),
    "res50_coco_384x288": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res50_coco_384x288-e6f795e9_20200709.pth",
        (384, 288), 0.731),
    "res101_coco_256x192": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res101_coco_256x192-6e6babf0_20200708.pth",
        (256, 192), 0.726),
    "res101_coco_384x288": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res101_coco_384x288-8c71bdc9_20200709.pth",
        (384, 288), 0.748),
    "res152_coco_256x192": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res152_coco_256x192-f6e307c2_20200709.pth",
        (256, 192), 0.735),
    "res152_coco_384x288": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res152_coco_384x288-3860d4c9_20200709.pth",
        (384, 288), 0.750),
    # The fast ones for CPUs: the same head on MobileNetV2 (models/mobilenet_v2.py). From MMPose 0.x,
    # configs/body/2d_kpt_sview_rgb_img/topdown_heatmap/coco/mobilenetv2_coco.md (the same rows in
    # configs/legacy/... @ fd46280f558b1db24967afa030a92ca7a750a418). The architecture of a file comes
    # from its keys (infer_network), never from these names.
    "mobilenetv2_coco_256x192": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/mobilenetv2/mobilenetv2_coco_256x192-d1e58e7b_20200727.pth",
        (256, 192), 0.646),
    "mobilenetv2_coco_384x288": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/mobilenetv2/mobilenetv2_coco_384x288-26be4816_20200727.pth",
        (384, 288), 0.673),
    # The same ResNet SimpleBaselines trained on DARK's unbiased targets: the checkpoints MMPose's DARK
    # APs (72.4 for R50 256x192) were measured with, decoded with `--decode dark`. From MMPose 0.x,
    # configs/top_down/darkpose/coco (the DARK results table).
    "res50_coco_256x192_dark": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res50_coco_256x192_dark-43379d20_20200709.pth",
        (256, 192), 0.724),
    "res50_coco_384x288_dark": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res50_coco_384x288_dark-33d3e5e5_20210203.pth",
        (384, 288), 0.735),
    "res101_coco_256x192_dark": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res101_coco_256x192_dark-64d433e6_20200812.pth",
        (256, 192), 0.732),
    "res101_coco_384x288_dark": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res101_coco_384x288_dark-cb45c88d_20210203.pth",
        (384, 288), 0.749),
    "res152_coco_256x192_dark": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res152_coco_256x192_dark-ab4840d5_20200812.pth",
        (256, 192), 0.745),
    "res152_coco_384x288_dark": ZooCheckpoint(
        "https://download.openmmlab.com/mmpose/top_down/resnet/res152_coco_384x288_dark-d3b8ebd7_20210203.pth",
        (384, 288), 0.757),
}
DEFAULT_CHECKPOINT = "res50_coco_256x192"

# numpy objects that training loops leave in a checkpoint's `meta` (a best score, a seed). They
# rebuild plain data (arrays, scalars and their dtypes), never call code, so the weights-only
# unpickler may create them. Pickles written with numpy 1.x name the module `numpy.core`, numpy 2
# renamed it `numpy._core`: allow both spellings.
_NUMPY_DATA_GLOBALS = (
    [np.dtype, np.ndarray]
    + [getattr(np.dtypes, name) for name in np.dtypes.__all__ if name != "ObjectDType"]
    + [
        (getattr(np._core.multiarray, name), f"{module}.multiarray.{name}")
        for name in ("scalar", "_reconstruct")
        for module in ("numpy.core", "numpy._core")
    ]
)


# --- reading checkpoints ---------------------------------------------------------------------------

def _load_pickle(path: Path) -> object:
    """torch.load with weights_only=True: tensors and plain containers only, never code.

    Reads both formats torch has written: zip (torch >= 1.6) and legacy (one pickle stream followed by
    the raw storages; the 2018 Microsoft and 2020 MMPose files), including legacy files whose
    tensors were saved from `torch.cuda.FloatStorage` on 'cuda:0' (map_location moves them here).
    Every failure is a WeightsError with one line: a pickle that asks for a class or function outside
    the allowlist is "could run code"; anything else (cut short, random bytes, text) is damage.
    """
    import torch

    try:
        with torch.serialization.safe_globals(_NUMPY_DATA_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # The weights-only unpickler says "Unsupported global" both for a complete pickle that asks
        # for os.system and for one cut inside a GLOBAL's name, or bytes that happen to spell one:
        # only a pickle that parses to its end is refused as code.
        if _refused_global(error) and _pickle_problem(path) is None:
            raise WeightsError(
                f"{path} holds Python objects ({_unsafe_globals(path, error)}) that could run code when "
                f"loaded; refusing it: use a plain state_dict checkpoint ({DOWNLOAD_HINT} fetches one)"
            ) from None
        raise WeightsError(_damaged(path, error)) from None
    except PermissionError:
        raise WeightsError(f"cannot read {path}: permission denied; check the file's permissions") from None
    except Exception as error:
        # Why so broad: torch.load on damaged bytes fails with whatever the first bad byte trips
        # (EOFError, IndexError, struct.error, KeyError, RuntimeError, ValueError, OverflowError,
        # UnicodeDecodeError, zipfile.BadZipFile, MemoryError for an absurd storage size ...); for
        # the user they all mean one thing, and none of them may surface as a traceback.
        raise WeightsError(_damaged(path, error)) from None


_REFUSED_GLOBAL = re.compile(
    r"Unsupported global: GLOBAL (\S+)|unsupported GLOBAL (\S+)|Can only create new object"
    r"|Trying to call reduce for unrecognized function"
)


def _refused_global(error: BaseException) -> bool:
    """Whether torch's weights-only unpickler refused a global (a class or function), not a byte."""
    return _REFUSED_GLOBAL.search(str(error)) is not None


def _pickle_problem(path: Path) -> str | None:
    """What is wrong with the checkpoint's pickle stream, or None when it parses to its end.

    pickletools only reads the opcodes, it runs none. Zip checkpoints: torch only reached the
    unpickler after reading the zip's central directory (at the end of the file), so the file is
    whole: None. Legacy: four pickles in a row (magic number, protocol, system info, the object),
    each must reach its STOP opcode.
    """
    if zipfile.is_zipfile(path):
        return None
    with open(path, "rb") as file:  # readable: the caller has just read it
        if file.read(4) == b"PK\x03\x04":  # a zip's first entry, but no directory at the end
            return "a zip checkpoint whose end is missing"
        file.seek(0)
        try:
            for _ in range(4):
                for _ in pickletools.genops(file):
                    pass
        except Exception as error:  # pickletools raises ValueError, for a bad opcode and for the end
            if "exhausted" in str(error) or file.tell() >= path.stat().st_size:
                return "its pickle data stops before its end"
            return f"byte {file.tell()} is not pickle data"
    return None


def _damaged(path: Path, error: BaseException) -> str:
    """The one line for a file that is cut short or is not a checkpoint at all."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            head = file.read(64)
    except OSError:  # gone or unreadable since torch opened it: say what torch said
        return f"{path} is truncated or not a PyTorch checkpoint ({_unpickler_reason(error)}); download it again"
    if size == 0:
        reason = "the file is empty"
    elif head.isascii() and (head.decode("ascii").isprintable() or b"\n" in head):
        reason = "it is a text file"  # an HTML error page or a Git LFS pointer saved under the name
    elif (problem := _pickle_problem(path)) is not None:
        reason = f"{size} bytes, {problem}"
    else:
        detail = _unpickler_reason(error)
        if detail != type(error).__name__:
            detail = f"{type(error).__name__}: {detail}"
        reason = f"{size} bytes, {detail[:120]}"
    return f"{path} is truncated or not a PyTorch checkpoint ({reason}); download it again"


def _unpickler_reason(error: BaseException) -> str:
    """The line that says what went wrong: torch wraps the weights-only unpickler's reason in advice
    to load with weights_only=False, which is the one thing not to do with a damaged download."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _unsafe_globals(path: Path, error: BaseException | None = None) -> str:
    """The classes/functions a refused pickle asks for, for the error message."""
    import torch

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # the legacy (non-zip) format cannot be listed: name the one the unpickler met
        match = _REFUSED_GLOBAL.search(str(error or ""))
        names = [name for name in (match.groups() if match else ()) if name]
    return ", ".join(names[:3]) or "classes or functions"


def normalize_state_dict(checkpoint: object, source: str = "checkpoint") -> tuple[dict[str, np.ndarray], str]:
    """Microsoft-layout keys -> numpy arrays, from either layout; also returns "microsoft" or "mmpose".

    Drops the `module.` DataParallel prefix and BatchNorm's num_batches_tracked (a training counter).
    """
    import torch

    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        raise WeightsError(f"{source} holds no state_dict; expected a SimpleBaseline (PoseResNet) checkpoint")

    keys = [key.removeprefix("module.") for key in state]
    mmpose = any(key.startswith(("backbone.", "keypoint_head.")) for key in keys)
    normalized = {}
    for original, key in zip(state, keys):
        if mmpose:
            if key.startswith("backbone."):
                key = key.removeprefix("backbone.")
            elif key.startswith("keypoint_head."):
                key = key.removeprefix("keypoint_head.")
            else:
                key = "<outside backbone/keypoint_head>." + key  # reported as unmapped below
        if key.endswith("num_batches_tracked"):
            continue
        value = state[original]
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{source}: {original} is a {type(value).__name__}, not a tensor; not a state_dict")
        normalized[key] = value.detach().to(torch.float32).numpy()
    return normalized, "mmpose" if mmpose else "microsoft"


def read_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], str]:
    """(Microsoft-layout state as numpy arrays, "microsoft" or "mmpose") of a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} not found; give the path of a .pth file")
    return normalize_state_dict(_load_pickle(path), source=str(path))


def infer_architecture(state: dict[str, np.ndarray], source: str = "checkpoint") -> tuple[int, int]:
    """(depth, num_joints) of a Microsoft-layout state: blocks per stage, final layer's outputs."""
    from models.simple_baseline import BLOCKS_PER_STAGE

    if "layer1.0.conv1.weight" not in state or "final_layer.weight" not in state:
        raise WeightsError(
            f"{source} is not a SimpleBaseline ResNet or MobileNetV2 checkpoint (no layer1.0.conv1 / "
            "final_layer); only PoseResNet-50/101/152 (MMPose 'res*_coco' or Microsoft 'pose_resnet') "
            "and MMPose 'mobilenetv2_coco' convert"
        )
    if "layer1.0.conv3.weight" not in state:
        raise WeightsError(f"{source} uses ResNet basic blocks (ResNet-18/34); only ResNet-50/101/152 convert")

    def blocks(stage: int) -> int:
        return len({key.split(".")[1] for key in state if key.startswith(f"layer{stage}.")})

    found = (blocks(1), blocks(2), blocks(3), blocks(4))
    depths = [depth for depth, layout in BLOCKS_PER_STAGE.items() if layout == found]
    if not depths:
        raise WeightsError(f"{source} has {found} blocks per stage, not a ResNet-50/101/152 layout")
    return depths[0], int(state["final_layer.weight"].shape[0])


# MobileNetV2 width multipliers whose channel counts infer_network recognises (MMPose's zoo has 1.0).
MOBILENETV2_WIDEN_FACTORS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


def infer_network(state: dict[str, np.ndarray], source: str = "checkpoint") -> dict:
    """The network a Microsoft-layout state holds, read from its keys and shapes (never its file name).

    Returns what the JSON sidecar records and build_network builds from:
    {"backbone": "resnet", "depth": 50, "num_joints": 17} or
    {"backbone": "mobilenetv2", "widen_factor": 1.0, "num_joints": 17}.
    MobileNetV2 checkpoints (MMPose's mmcv ConvModules) have `conv1.conv.weight` and
    `layer1.0.conv.0.conv.weight`; anything else must be a PoseResNet (infer_architecture).
    """
    if "conv1.conv.weight" in state and "layer1.0.conv.0.conv.weight" in state:
        return {"backbone": "mobilenetv2", **_infer_mobilenet_v2(state, source)}
    depth, joints = infer_architecture(state, source=source)
    return {"backbone": "resnet", "depth": depth, "num_joints": joints}


def _infer_mobilenet_v2(state: dict[str, np.ndarray], source: str) -> dict:
    """widen_factor and num_joints of a SimpleBaseline-MobileNetV2 state, its stage layout checked."""
    from models.mobilenet_v2 import ARCH_SETTINGS, MobileNetV2Config

    if "final_layer.weight" not in state or "conv2.conv.weight" not in state:
        raise WeightsError(f"{source} is a MobileNetV2 without conv2 / final_layer; not a SimpleBaseline-MobileNetV2 "
                           "(MMPose 'mobilenetv2_coco') checkpoint")

    def blocks(stage: int) -> int:
        return len({key.split(".")[1] for key in state if key.startswith(f"layer{stage}.")})

    found = tuple(blocks(stage) for stage in range(1, len(ARCH_SETTINGS) + 1))
    expected = tuple(setting[2] for setting in ARCH_SETTINGS)
    if found != expected or f"layer{len(ARCH_SETTINGS) + 1}.0.conv.0.conv.weight" in state:
        raise WeightsError(f"{source} has {found} MobileNetV2 blocks per stage, not MobileNetV2's {expected}")

    def stage_out(stage: int) -> int:
        # The last module of the stage's first block, its linear 1x1 projection.
        last = max(int(key.split(".")[3]) for key in state if key.startswith(f"layer{stage}.0.conv."))
        return int(state[f"layer{stage}.0.conv.{last}.conv.weight"].shape[0])

    widths = (int(state["conv1.conv.weight"].shape[0]), *(stage_out(s) for s in range(1, len(ARCH_SETTINGS) + 1)),
              int(state["conv2.conv.weight"].shape[0]))
    for widen_factor in MOBILENETV2_WIDEN_FACTORS:
        if MobileNetV2Config(widen_factor=widen_factor).stage_channels == widths:
            return {"widen_factor": widen_factor, "num_joints": int(state["final_layer.weight"].shape[0])}
    raise WeightsError(f"{source} has MobileNetV2 channel widths {widths}, which match no width multiplier in "
                       f"{MOBILENETV2_WIDEN_FACTORS}")


def network_label(info: dict) -> str:
    """'SimpleBaseline-R50' or 'SimpleBaseline-MobileNetV2' (x0.5 when widened) for messages."""
    if info.get("backbone", "resnet") == "mobilenetv2":
        widen = float(info.get("widen_factor", 1.0))
        return "SimpleBaseline-MobileNetV2" + ("" if widen == 1.0 else f" x{widen:g}")
    return f"SimpleBaseline-R{info['depth']}"


def build_network(info: dict, input_size: tuple[int, int] | None = None) -> keras.Model:
    """The Keras network an infer_network / sidecar description names, with fresh weights.

    input_size (H, W) defaults to info["input_size"].
    """
    input_size = tuple(input_size or info["input_size"])
    if info.get("backbone", "resnet") == "mobilenetv2":
        from models.mobilenet_v2 import build_pose_mobilenet_v2

        return build_pose_mobilenet_v2(int(info["num_joints"]), input_size, float(info.get("widen_factor", 1.0)))
    from models.simple_baseline import build_simple_baseline

    return build_simple_baseline(int(info["depth"]), int(info["num_joints"]), input_size)


def _network_fields(info: dict) -> dict:
    """The sidecar fields that fix the architecture, type-checked; old sidecars (no "backbone") are ResNets.

    Raises KeyError / ValueError / TypeError for a missing or bad field.
    """
    backbone = info.get("backbone", "resnet")
    if backbone == "resnet":
        return {"backbone": "resnet", "depth": int(info["depth"])}
    if backbone == "mobilenetv2":
        widen_factor = float(info.get("widen_factor", 1.0))
        if not widen_factor > 0:
            raise ValueError(f"widen_factor {widen_factor} is not positive")
        return {"backbone": "mobilenetv2", "widen_factor": widen_factor}
    raise ValueError(f"unknown backbone {backbone!r}")


# --- mapping onto the Keras model ------------------------------------------------------------------

def _conv_kernel(weight: np.ndarray) -> np.ndarray:
    """torch Conv2d (out, in, kh, kw) -> Keras Conv2D (kh, kw, in, out).

    Also serves ConvTranspose2d: torch stores (in, out, kh, kw) and Keras Conv2DTranspose wants
    (kh, kw, out, in), the same axis permutation. Both frameworks compute the transposed conv as the
    gradient of a cross-correlation, so no spatial flip (the parity test proves it).
    """
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0))


def _depthwise_kernel(weight: np.ndarray) -> np.ndarray:
    """torch depthwise Conv2d (C, 1, kh, kw), groups=C -> Keras DepthwiseConv2D (kh, kw, C, 1).

    Depth multiplier 1, as in MobileNetV2; any other shape fails assign_state's shape check.
    """
    return np.ascontiguousarray(weight.transpose(2, 3, 0, 1)) if weight.ndim == 4 else weight


def _layer_sources(layer: keras.layers.Layer) -> list[tuple[keras.Variable, str, object]]:
    """(Keras variable, torch key, layout fix) for each weight of one layer."""
    import keras

    from models.simple_baseline import torch_module_name

    name = torch_module_name(layer.name)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [(layer.kernel, f"{name}.weight", _depthwise_kernel)] + (
            [(layer.bias, f"{name}.bias", None)] if layer.use_bias else [])
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
        sources = [(layer.kernel, f"{name}.weight", _conv_kernel)]
        if layer.use_bias:
            sources.append((layer.bias, f"{name}.bias", None))
        return sources
    if isinstance(layer, keras.layers.BatchNormalization):
        return [
            (layer.gamma, f"{name}.weight", None),
            (layer.beta, f"{name}.bias", None),
            (layer.moving_mean, f"{name}.running_mean", None),
            (layer.moving_variance, f"{name}.running_var", None),
        ]
    if layer.weights:
        raise TypeError(f"no torch mapping for Keras layer {layer.name} ({type(layer).__name__})")
    return []


def assign_state(model: keras.Model, state: dict[str, np.ndarray], source: str = "checkpoint") -> None:
    """Copy every tensor of a Microsoft-layout state into `model`, checking every shape.

    Fails, listing them, when a checkpoint key has no Keras weight or a Keras weight no key.
    """
    pending = []
    missing = []
    for layer in model.layers:
        for variable, key, fix in _layer_sources(layer):
            if key not in state:
                missing.append(key)
                continue
            value = fix(state[key]) if fix else state[key]
            if tuple(value.shape) != tuple(variable.shape):
                raise WeightsError(
                    f"{source}: {key} has shape {tuple(value.shape)} after transposing, the model "
                    f"expects {tuple(variable.shape)}; not a SimpleBaseline checkpoint of this size"
                )
            pending.append((variable, value))
    used = {key for layer in model.layers for _, key, _ in _layer_sources(layer)}
    unmapped = sorted(set(state) - used)
    if missing or unmapped:
        parts = []
        if unmapped:
            parts.append(f"{len(unmapped)} checkpoint keys with no Keras weight: {', '.join(unmapped[:8])}")
        if missing:
            parts.append(f"{len(missing)} Keras weights missing from the checkpoint: {', '.join(missing[:8])}")
        raise WeightsError(f"{source} does not match SimpleBaseline: " + "; ".join(parts))
    for variable, value in pending:
        variable.assign(value)


# --- convert ---------------------------------------------------------------------------------------

def checkpoint_stem(path: Path) -> str:
    """'res50_coco_256x192-ec54d7f3_20200709.pth' -> 'res50_coco_256x192-ec54d7f3_20200709';
    'pose_resnet_50_256x192.pth.tar' -> 'pose_resnet_50_256x192'."""
    name = path.name
    for suffix in (".tar", ".pth", ".pt", ".pkl", ".ckpt", ".bin"):
        name = name.removesuffix(suffix)
    return name


def input_size_from_name(name: str) -> tuple[int, int] | None:
    """(H, W) from an 'HxW' in a checkpoint name (both zoos name files this way), else None.

    Raises WeightsError when that size is not a multiple of 32 (the network cannot be built for it).
    """
    sizes = {(int(h), int(w)) for h, w in re.findall(r"(?<!\d)(\d{2,4})x(\d{2,4})(?!\d)", name)}
    if len(sizes) != 1:
        return None
    size = sizes.pop()
    problem = input_size_problem(size)
    if problem:
        raise WeightsError(f"{name} names the input size {size[0]}x{size[1]}, but {problem}; "
                           "give the size the model was trained at with --input-size HxW")
    return size


def input_size_problem(size: tuple[int, int]) -> str | None:
    """Why a SimpleBaseline cannot be built for (H, W), or None: the backbone divides by 32 and the
    deconvolutions multiply back by 8, so both sides must be positive multiples of 32."""
    height, width = size
    if height <= 0 or width <= 0 or height % 32 or width % 32:
        return "both sides must be multiples of 32 (256x192, 384x288, ...)"
    return None


def sidecar_path(weights_path: Path) -> Path:
    """weights/<name>.weights.h5 -> weights/<name>.json."""
    weights_path = Path(weights_path)
    return weights_path.with_name(weights_path.name.removesuffix(KERAS_SUFFIX) + ".json")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomically(path: Path, write) -> None:
    """write(temp_path) into a hidden temp file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_path(path)
    try:
        write(temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _temp_path(path: Path) -> Path:
    """A hidden, unique name beside `path` (same file system, so the final rename is atomic).

    Not tempfile.mkstemp: its files are private (0600) and would stay so after the rename. The name
    keeps .weights.h5 at the end because Keras refuses to write weights under any other suffix.
    """
    suffix = KERAS_SUFFIX if path.name.endswith(KERAS_SUFFIX) else path.suffix
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.part{suffix}")


def convert(
    src: str | Path,
    dst: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
    num_joints: int | None = None,
    source: str | None = None,
) -> Path:
    """Convert a PyTorch SimpleBaseline checkpoint into `dst` (a .weights.h5) and its JSON sidecar.

    dst defaults to weights/<checkpoint stem>.weights.h5. input_size (H, W) defaults to the 'HxW' in
    the file name, else 256 x 192 (the network is fully convolutional; the size only fixes the
    Keras input). num_joints, when given, must match the checkpoint. source is what the sidecar
    records as the origin (a URL for downloads), the path by default. Returns dst.
    """
    src = Path(src)
    dst = Path(dst) if dst is not None else WEIGHTS_DIR / (checkpoint_stem(src) + KERAS_SUFFIX)
    if not dst.name.endswith(KERAS_SUFFIX):
        raise WeightsError(f"output {dst} must end in {KERAS_SUFFIX} (the Keras weights format)")
    input_size = tuple(input_size or input_size_from_name(src.name) or DEFAULT_INPUT_SIZE)

    state, layout = read_checkpoint(src)
    network = infer_network(state, source=str(src))  # from the keys, never from the file name
    if num_joints is not None and num_joints != network["num_joints"]:
        raise WeightsError(f"{src} predicts {network['num_joints']} joints, not the {num_joints} asked for")

    model = build_network(network, input_size)
    assign_state(model, state, source=str(src))
    info = {
        "source": source or str(src.resolve()),
        "source_sha256": sha256_of(src),
        "layout": layout,
        **network,
        "input_size": list(input_size),
    }
    _write_atomically(dst, model.save_weights)
    _write_atomically(sidecar_path(dst), lambda temp: temp.write_text(json.dumps(info, indent=2) + "\n"))
    return dst


# --- load ------------------------------------------------------------------------------------------

# Short names for `run_demo.py --model`: the network (matched against each sidecar, never a file
# name) and the zoo checkpoint that provides it.
MODEL_SHORTHANDS = {
    "r50": ({"backbone": "resnet", "depth": 50}, "res50_coco_256x192"),
    "mobilenetv2": ({"backbone": "mobilenetv2"}, "mobilenetv2_coco_256x192"),
}


def _is_model(weights_path: Path, model: str) -> bool:
    """Whether the sidecar of `weights_path` describes the network MODEL_SHORTHANDS[model] names."""
    try:
        info = read_sidecar(weights_path)
    except WeightsError:
        return False
    wanted, _ = MODEL_SHORTHANDS[model]
    return all(info.get(key) == value for key, value in wanted.items())


def default_weights_path(folder: str | Path | None = None, model: str | None = None) -> Path | None:
    """The newest converted model in `folder` (default weights/): a .weights.h5 with its JSON, or None.

    model: a MODEL_SHORTHANDS name, to pick the newest of that network only.
    """
    folder = Path(folder) if folder is not None else WEIGHTS_DIR
    if not folder.is_dir():
        return None
    candidates = [
        path for path in folder.glob("*" + KERAS_SUFFIX)
        if not path.name.startswith(".") and sidecar_path(path).is_file()
        and (model is None or _is_model(path, model))
    ]
    return max(candidates, key=lambda path: path.stat().st_mtime, default=None)


def read_sidecar(weights_path: Path) -> dict:
    """The JSON beside a converted weights file, checked for the fields the model is built from."""
    path = sidecar_path(weights_path)
    try:
        info = json.loads(path.read_text())
        network = _network_fields(info)  # backbone, and depth or widen_factor
        joints = int(info["num_joints"])
        height, width = (int(v) for v in info["input_size"])
    except FileNotFoundError:
        raise WeightsError(f"{path} is missing, so {weights_path} cannot be built; convert again: {CONVERT_HINT}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise WeightsError(f"{path} is not a valid weights description ({error}); convert again: {CONVERT_HINT}") from None
    return {**info, **network, "num_joints": joints, "input_size": (height, width)}


def resolve_weights(path: str | Path | None = None, model: str | None = None) -> Path:
    """The converted weights file to use, checked without loading it (cheap: for early CLI errors).

    path None means the newest converted model in weights/, of the network `model` names when given
    (a MODEL_SHORTHANDS key: "r50", "mobilenetv2"). Raises MissingWeightsError (naming the download
    and convert commands) when there is none, WeightsError when its JSON is missing or bad or, with
    both path and model, describes another network.
    """
    if model is not None and model not in MODEL_SHORTHANDS:
        raise WeightsError(f"unknown model {model!r}; choose one of: {', '.join(MODEL_SHORTHANDS)}")
    if path is None:
        path = default_weights_path(model=model)
        if path is None:
            download = DOWNLOAD_HINT + (f" {MODEL_SHORTHANDS[model][1]}" if model else "")
            raise MissingWeightsError(
                f"no converted {model + ' ' if model else ''}pose weights in {WEIGHTS_DIR}; "
                f"run `{download}` or `{CONVERT_HINT}`"
            )
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"no pose weights at {path}; run `{DOWNLOAD_HINT}` or `{CONVERT_HINT}`")
    info = read_sidecar(path)
    if model is not None and not _is_model(path, model):
        raise WeightsError(f"{path} holds {network_label(info)}, not the {model} asked for; give --weights or --model, not both")
    return path


def load_pose_model(path: str | Path | None = None) -> keras.Model:
    """The SimpleBaseline Keras model with trained weights.

    path is a converted `.weights.h5` (its JSON sidecar says backbone, joints and input size); None
    means the newest converted model in weights/. Raises MissingWeightsError when there is none,
    WeightsError when the file does not fit its description.
    """
    path = resolve_weights(path)
    info = read_sidecar(path)
    model = build_network(info)
    mismatch = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except Exception as error:  # h5py and Keras raise several types for a wrong or damaged file
            mismatch = _short_reason(error)
    for warning in caught:
        # Keras only warns when a part of the file has no matching layer and leaves that part at
        # its random initial values: for inference that is as wrong as a shape error.
        if mismatch is None and "freshly-initialized" in str(warning.message):
            mismatch = str(warning.message).split(". ")[0]
        elif "freshly-initialized" not in str(warning.message):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if mismatch is not None:
        raise WeightsError(
            f"{path} does not fit {network_label(info)} with {info['num_joints']} joints "
            f"({mismatch}); convert the checkpoint again: {CONVERT_HINT}"
        )
    return model


def _short_reason(error: Exception) -> str:
    """One line out of Keras' multi-line load errors: the count, and the first shape it tripped on."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = _first_line(error).rstrip(":")
    shapes = next((line for line in lines[1:] if "variable.shape=" in line), None)
    if shapes:
        reason += " " + shapes.split(" Target variable")[0]
    return reason


# --- download --------------------------------------------------------------------------------------

def expected_sha256_prefix(url: str) -> str:
    """The 8 hex characters after the last '-' of the file name, as MMPose names its checkpoints."""
    name = Path(urllib.parse.urlparse(url).path).name
    match = re.search(r"-([0-9a-f]{8})[^-]*$", name)
    if not match:
        raise DownloadError(f"{name} carries no sha256 prefix to check it against; download it by hand and run: {CONVERT_HINT}")
    return match.group(1)


UNVERIFIED_SUFFIX = ".unverified"
ACCEPT_FLAG = "--accept-unverified"


def fetch(url: str, folder: Path = WEIGHTS_DIR, timeout: float = 15.0, accept_unverified: bool = False) -> Path:
    """Download `url` into folder/<file name>, checked against the sha256 prefix in its name.

    Downloads into a hidden temp file and renames it only once complete, so a failed or cut download
    leaves nothing behind. An existing verified file is reused.

    The prefix rule (MMPose names files `<name>-<first 8 hex of sha256>_<date>.pth`) is confirmed
    by an outside source for res50_coco_256x192 only. A complete download whose sha256 does not
    start with it is kept as `<file name>.unverified` (not converted, not used) and reported in one
    line that says how to accept it; a later call finds that file and does not download again.
    accept_unverified: use such a file (the one already kept, else the fresh download) all the same.
    """
    folder = Path(folder)
    name = Path(urllib.parse.urlparse(url).path).name
    target = folder / name
    unverified = folder / (name + UNVERIFIED_SUFFIX)
    prefix = expected_sha256_prefix(url)
    if target.is_file() and (accept_unverified or sha256_of(target).startswith(prefix)):
        return target
    if unverified.is_file():
        # Downloaded before, complete, with another checksum: downloading it again would fetch the
        # same bytes (one try is all a user asked for, never a loop).
        if accept_unverified:
            os.replace(unverified, target)
            return target
        raise DownloadError(_unverified_message(unverified, sha256_of(unverified), prefix, downloaded=False))
    manual = f"download {url} by hand and run: python -m app.weights convert {name}"

    folder.mkdir(parents=True, exist_ok=True)
    temp = _temp_path(target)
    digest = hashlib.sha256()
    received = 0
    try:
        with open(temp, "xb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)
            except urllib.error.HTTPError as error:
                raise DownloadError(f"{url} answered HTTP {error.code} {error.reason}; {manual}") from None
            except (urllib.error.URLError, OSError) as error:  # refused, no DNS, timed out
                reason = getattr(error, "reason", error)
                raise DownloadError(f"cannot reach {urllib.parse.urlparse(url).netloc} ({reason}); offline? {manual}") from None
            expected = int(response.headers.get("Content-Length") or 0)  # 0: the server did not say
            with response, tqdm(
                total=expected or None, unit="B", unit_scale=True, unit_divisor=1024, desc=name, leave=False
            ) as progress:
                try:
                    for chunk in iter(lambda: response.read(1 << 20), b""):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        progress.update(len(chunk))
                except (HTTPException, OSError) as error:
                    raise DownloadError(f"download of {name} broke off after {received} bytes ({error}); {manual}") from None
                if expected and received != expected:
                    raise DownloadError(f"download of {name} stopped at {received} of {expected} bytes; try again or {manual}")
        if digest.hexdigest().startswith(prefix) or accept_unverified:
            os.replace(temp, target)
            return target
        os.replace(temp, unverified)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    raise DownloadError(_unverified_message(unverified, digest.hexdigest(), prefix, downloaded=True))


def _unverified_message(path: Path, sha256: str, prefix: str, downloaded: bool) -> str:
    """One line: what did not match, where the file is, how to accept it or start over."""
    when = "downloaded" if downloaded else "already downloaded"
    return (
        f"{path.name.removesuffix(UNVERIFIED_SUFFIX)} ({when}) has sha256 {sha256[:8]}..., but its name says "
        f"{prefix}...; kept as {path}, not converted. If you trust the server, rerun the same download "
        f"command with {ACCEPT_FLAG} to convert it; to download it again instead, delete that file"
    )


def download(
    name: str = DEFAULT_CHECKPOINT,
    folder: Path = WEIGHTS_DIR,
    base_url: str | None = None,
    timeout: float = 15.0,
    accept_unverified: bool = False,
) -> Path:
    """Download the MMPose checkpoint `name` (see MODEL_ZOO), verify it, convert it; returns the .weights.h5.

    base_url replaces the server and folder of the zoo URL (a mirror, or a test server); the file
    name, and so its checksum, stays the zoo's. accept_unverified: see fetch().
    """
    if name not in MODEL_ZOO:
        raise DownloadError(f"unknown checkpoint {name!r}; choose one of: {', '.join(MODEL_ZOO)}")
    entry = MODEL_ZOO[name]
    url = entry.url
    if base_url:
        url = base_url.rstrip("/") + "/" + Path(urllib.parse.urlparse(entry.url).path).name
    return download_url(url, folder, input_size=entry.input_size, timeout=timeout, accept_unverified=accept_unverified)


def download_url(
    url: str,
    folder: Path = WEIGHTS_DIR,
    input_size: tuple[int, int] | None = None,
    timeout: float = 15.0,
    accept_unverified: bool = False,
) -> Path:
    """fetch() a checkpoint whose name carries its sha256 prefix, then convert() it beside itself."""
    checkpoint = fetch(url, folder, timeout=timeout, accept_unverified=accept_unverified)
    dst = Path(folder) / (checkpoint_stem(checkpoint) + KERAS_SUFFIX)
    return convert(checkpoint, dst, input_size=input_size, source=url)


# --- command line ----------------------------------------------------------------------------------

def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected HxW such as 256x192, got {text!r}")
    return int(match.group(1)), int(match.group(2))  # checked in _main, for a one-line error


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser = argparse.ArgumentParser(prog="python -m app.weights", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    convert_cmd = commands.add_parser("convert", parents=[common], help="convert a PyTorch checkpoint to Keras")
    convert_cmd.add_argument("src", type=Path, help="checkpoint (.pth / .pth.tar), Microsoft or MMPose layout")
    convert_cmd.add_argument("dst", type=Path, nargs="?", help=f"output *{KERAS_SUFFIX} (default: weights/<stem>{KERAS_SUFFIX})")
    convert_cmd.add_argument("--input-size", type=_size, help="HxW the model is built for (default: from the file name, else 256x192)")
    convert_cmd.add_argument("--joints", type=int, help="refuse a checkpoint with another number of joints")

    zoo = ", ".join(f"{name} (AP {entry.coco_ap:.3f})" for name, entry in MODEL_ZOO.items())
    download_cmd = commands.add_parser(
        "download", parents=[common], help="download an MMPose checkpoint, verify and convert it",
        description=f"COCO val2017 AP: {zoo}",
    )
    download_cmd.add_argument("name", nargs="?", default=DEFAULT_CHECKPOINT, choices=list(MODEL_ZOO))
    download_cmd.add_argument("--url", help="base URL to download from instead of download.openmmlab.com")
    download_cmd.add_argument("--dir", type=Path, default=WEIGHTS_DIR, help="folder for the checkpoint and the converted files")
    download_cmd.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the server")
    download_cmd.add_argument(ACCEPT_FLAG, action="store_true",
                              help="convert the file even if its sha256 does not start with the 8 hex characters in its name")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_command(lambda: _main(args), args.debug)


def _main(args: argparse.Namespace) -> int:
    if args.command == "convert":
        if args.input_size and (problem := input_size_problem(args.input_size)):
            raise WeightsError(f"--input-size {args.input_size[0]}x{args.input_size[1]}: {problem}")
        path = convert(args.src, args.dst, input_size=args.input_size, num_joints=args.joints)
    else:
        path = download(args.name, args.dir, base_url=args.url, timeout=args.timeout,
                        accept_unverified=args.accept_unverified)
    info = read_sidecar(path)
    height, width = info["input_size"]
    print(f"wrote {path} ({network_label(info)}, {info['num_joints']} joints, {height}x{width})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
