"""Reading a PyTorch checkpoint safely: tensors and plain data only, one line for a damaged file.

normalize_state_dict turns either layout (Microsoft's bare state_dict or MMPose 0.x's
{'state_dict': {'backbone.*', 'keypoint_head.*'}}) into Microsoft-layout keys -> numpy arrays.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import zipfile
from pathlib import Path

import numpy as np

from app.errors import WeightsError
from app.weights.files import DOWNLOAD_HINT

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

