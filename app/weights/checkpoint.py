"""Reading a PyTorch checkpoint safely: tensors and plain data only, one line for a damaged file.

normalize_state_dict turns either layout (Microsoft's bare state_dict, or MMPose's
{'state_dict': {'backbone.*', 'keypoint_head.*'}} of 0.x and {'backbone.*', 'head.*'} of 1.x) into
Microsoft-layout keys -> numpy arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.errors import WeightsError
from app.safe_pickle import NUMPY_DATA_GLOBALS, DamagedPickle, RefusedPickle, load_restricted
from app.weights.files import DOWNLOAD_HINT


def _load_pickle(path: Path) -> object:
    """torch.load with weights_only=True (app.safe_pickle, as for a .pt detector): tensors, plain
    containers and numpy data only, never code.

    Reads both formats torch has written: zip (torch >= 1.6) and legacy (one pickle stream followed by
    the raw storages; the 2018 Microsoft and 2020 MMPose files), including legacy files whose
    tensors were saved from `torch.cuda.FloatStorage` on 'cuda:0' (map_location moves them here).
    Every failure is a WeightsError with one line: a pickle that asks for a class or function outside
    the allowlist is "could run code" (a plain pickle.dump file too); anything else (cut short,
    random bytes, text) is damage.
    """
    try:
        return load_restricted(path, NUMPY_DATA_GLOBALS)
    except RefusedPickle as refused:
        if any(name.startswith("mmengine.") for name in refused.names):
            # MMPose 1.x's training checkpoints (epoch_*.pth, best_*.pth) keep MMEngine's log and
            # optimizer state beside the weights; MMPose publishes its own files without them.
            raise WeightsError(
                f"{path} is an MMEngine training checkpoint ({refused}): it holds Python objects that "
                "could run code when loaded; refusing it: run MMPose's tools/misc/publish_model.py on "
                "it, which keeps the weights and drops the training state, and convert its output"
            ) from None
        raise WeightsError(
            f"{path} holds Python objects ({refused}) that could run code when "
            f"loaded; refusing it: use a plain state_dict checkpoint ({DOWNLOAD_HINT} fetches one)"
        ) from None
    except DamagedPickle as damage:
        raise WeightsError(f"{path} is truncated or not a PyTorch checkpoint ({damage}); download it again") from None
    except PermissionError:
        raise WeightsError(f"cannot read {path}: permission denied; check the file's permissions") from None


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def normalize_state_dict(checkpoint: object, source: str = "checkpoint") -> tuple[dict[str, np.ndarray], str]:
    """Microsoft-layout keys -> numpy arrays, from either layout; also returns "microsoft" or "mmpose"
    (0.x and 1.x alike).

    Drops the `module.` DataParallel prefix and BatchNorm's num_batches_tracked (a training counter).
    """
    import torch

    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        raise WeightsError(f"{source} holds no state_dict; expected a SimpleBaseline (PoseResNet) checkpoint")

    keys = [key.removeprefix("module.") for key in state]
    # MMPose 1.x renamed the TopDown model's `keypoint_head` to `head`; the modules under it kept
    # their names and order (HeatmapHead: deconv_layers.{0,1,3,4,6,7}, final_layer), so the
    # checkpoints of both versions map onto the same Keras layers. A bare `head.*` without
    # `backbone.*` is another network's own module (ViTPose's), not MMPose's layout.
    backbone = any(key.startswith("backbone.") for key in keys)
    head = "head." if backbone and any(key.startswith("head.") for key in keys) else "keypoint_head."
    mmpose = backbone or any(key.startswith(head) for key in keys)
    normalized = {}
    for original, key in zip(state, keys):
        if mmpose and key.startswith("data_preprocessor."):
            # MMPose 1.x's input normalisation (mean and std of 0-255 RGB), kept in some training
            # checkpoints: the product normalises with ImageNet's (app.crop), so other values would
            # give wrong keypoints without a word.
            _check_preprocessor(key, state[original], source)
            continue
        if mmpose:
            if key.startswith("backbone."):
                key = key.removeprefix("backbone.")
            elif key.startswith(head):
                key = key.removeprefix(head)
            else:
                key = f"<outside backbone/{head[:-1]}>." + key  # reported as unmapped below
        if key.endswith("num_batches_tracked"):
            continue
        value = state[original]
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{source}: {original} is a {type(value).__name__}, not a tensor; not a state_dict")
        normalized[key] = value.detach().to(torch.float32).numpy()
    return normalized, "mmpose" if mmpose else "microsoft"


# MMPose's data_preprocessor values for COCO (ImageNet's statistics of 0-255 RGB).
_PREPROCESSOR = {"data_preprocessor.mean": (123.675, 116.28, 103.53), "data_preprocessor.std": (58.395, 57.12, 57.375)}


def _check_preprocessor(key: str, value, source: str) -> None:
    """WeightsError unless `value` is the ImageNet mean or std the product normalises with."""
    expected = _PREPROCESSOR.get(key)
    values = value.detach().reshape(-1).tolist() if hasattr(value, "detach") else None
    if expected is None or values is None or len(values) != 3 or not np.allclose(values, expected, atol=1e-3):
        raise WeightsError(f"{source}: {key} is {values}, not ImageNet's {expected or 'mean and std'}: "
                           "a network trained on other input statistics gives wrong keypoints here")


def read_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], str]:
    """(Microsoft-layout state as numpy arrays, "microsoft" or "mmpose") of a checkpoint file."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"checkpoint {path} is a folder; give the path of a .pth file")
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} not found; give the path of a .pth file")
    return normalize_state_dict(_load_pickle(path), source=str(path))

