"""Reading pickled files we are handed (PyTorch checkpoints, Ultralytics .pt detectors) without
letting them run code: one mechanism for the weights converter and the detector.

    obj = load_restricted(path, allowed)    # RefusedPickle: it asks for a class/function not allowed
                                            # DamagedPickle: cut short, random bytes, text ...

A pickle is a small program: its GLOBAL opcodes name any importable callable (`os.system`) and
REDUCE calls it. torch's weights-only unpickler (`torch.load(weights_only=True)`) only creates
tensors, plain containers and the classes and functions it is given; everything else stops the
load before it is called. That unpickler is the mechanism here (a well-kept one, the one torch
itself recommends); this module adds the allow-lists and tells a refused global from damage.

`ultralytics_allowed(names)` is the allow-list for Ultralytics detector checkpoints, made from
a real YOLOv8n checkpoint saved as Ultralytics saves them (`YOLO("yolov8n.yaml").save(...)`):
torch.nn and Ultralytics layers (nn.Module subclasses, whose unpickling only fills their
`__dict__`), `collections.OrderedDict`, `builtins.set`, torch's tensor rebuilders and storages
(allowed by torch by default), plus the data classes Ultralytics' own restricted loader
(`ultralytics.nn.tasks._SafeLoad`) allows for official checkpoints: its argument namespace,
numpy scalars and dtypes, and `pathlib` paths.
"""

from __future__ import annotations

import importlib
import io
import pickle
import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np


class RefusedPickle(Exception):
    """The pickle asks for classes or functions outside the allow-list: it could run code.
    `names`: what it asks for ("posix.system", ...), as far as a static read can tell."""

    def __init__(self, names: list[str]):
        super().__init__(", ".join(names[:3]) or "classes or functions")
        self.names = names


class DamagedPickle(Exception):
    """Not a readable checkpoint: str(error) says why, e.g. "1234 bytes, its pickle data stops
    before its end" or "the file is empty"."""


# numpy objects that training loops leave in a checkpoint's `meta` (a best score, a seed). They
# rebuild plain data (arrays, scalars and their dtypes), never call code, so the weights-only
# unpickler may create them. Pickles written with numpy 1.x name the module `numpy.core`, numpy 2
# renamed it `numpy._core`: allow both spellings.
NUMPY_DATA_GLOBALS = (
    [np.dtype, np.ndarray]
    + [getattr(np.dtypes, name) for name in np.dtypes.__all__ if name != "ObjectDType"]
    + [
        (getattr(np._core.multiarray, name), f"{module}.multiarray.{name}")
        for name in ("scalar", "_reconstruct")
        for module in ("numpy.core", "numpy._core")
    ]
)

# Modules whose nn.Module subclasses an Ultralytics detector checkpoint may hold.
_LAYER_MODULES = ("torch.nn.modules.", "ultralytics.nn.modules.")
_MODEL_MODULE = "ultralytics.nn.tasks"


def load_restricted(path: str | Path, allowed: Iterable = ()) -> object:
    """torch.load(path, weights_only=True) allowing also `allowed` (objects, or (object, "module.Name")
    pairs as torch.serialization.safe_globals takes them); nothing else is ever created or called.

    Reads both formats torch has written: zip (torch >= 1.6) and legacy (one pickle stream after
    another, then the raw storages), with tensors saved on a GPU moved to the CPU.
    Raises RefusedPickle, DamagedPickle, or PermissionError.
    """
    import torch

    path = Path(path)
    allowed = list(allowed)
    try:
        with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
            # "Detected pickle protocol 4 ...": advice for torch's developers; the load is refused or not.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # The weights-only unpickler says "Unsupported global" both for a complete pickle that asks
        # for os.system and for one cut inside a GLOBAL's name, or bytes that happen to spell one:
        # only globals of pickle streams that parse to their end count as code.
        # (A global the static read cannot name, e.g. one built from memoised strings, is still
        # refused by the unpickler; it is then reported as damage.)
        names = unsafe_globals(path, allowed)
        if names:
            raise RefusedPickle(names) from None
        raise DamagedPickle(damage_reason(path, error)) from None
    except PermissionError:
        raise
    except Exception as error:
        # Why so broad: torch.load on damaged bytes fails with whatever the first bad byte trips
        # (EOFError, IndexError, struct.error, KeyError, RuntimeError, ValueError, OverflowError,
        # UnicodeDecodeError, zipfile.BadZipFile, MemoryError for an absurd storage size ...); for
        # the user they all mean one thing, and none of them may surface as a traceback.
        raise DamagedPickle(damage_reason(path, error)) from None


def pickle_problem(path: Path, streams: int = 4) -> str | None:
    """What is wrong with the file's pickle data, or None when it parses to its end.

    pickletools only reads the opcodes, it runs none. Zip checkpoints: torch only reached the
    unpickler after reading the zip's central directory (at the end of the file), so the file is
    whole: None. Legacy: `streams` pickles in a row (torch writes four: magic number, protocol,
    system info, the object; a plain pickle.dump file has one), each must reach its STOP opcode.
    """
    if zipfile.is_zipfile(path):
        return None
    with open(path, "rb") as file:  # readable: the caller has just read it
        if file.read(4) == b"PK\x03\x04":  # a zip's first entry, but no directory at the end
            return "a zip checkpoint whose end is missing"
        file.seek(0)
        try:
            for _ in range(streams):
                for _ in pickletools.genops(file):
                    pass
        except Exception as error:  # pickletools raises ValueError, for a bad opcode and for the end
            if "exhausted" in str(error) or file.tell() >= path.stat().st_size:
                return "its pickle data stops before its end"
            return f"byte {file.tell()} is not pickle data"
    return None


def damage_reason(path: Path, error: BaseException) -> str:
    """Why a file that failed to load is not a checkpoint, in a few words (for "... (reason)")."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            head = file.read(64)
    except OSError:  # gone or unreadable since torch opened it: say what torch said
        return unpickler_reason(error)
    if size == 0:
        return "the file is empty"
    if head.isascii() and (head.decode("ascii").isprintable() or b"\n" in head):
        return "it is a text file"  # an HTML error page or a Git LFS pointer saved under the name
    if (problem := pickle_problem(path)) is not None:
        return f"{size} bytes, {problem}"
    detail = unpickler_reason(error)
    if detail != type(error).__name__:
        detail = f"{type(error).__name__}: {detail}"
    return f"{size} bytes, {detail[:120]}"


def unpickler_reason(error: BaseException) -> str:
    """The line that says what went wrong: torch wraps the weights-only unpickler's reason in advice
    to load with weights_only=False, which is the one thing not to do with a file we are handed."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def globals_in(path: Path) -> list[str]:
    """Every "module.name" the file's pickle data names with GLOBAL or STACK_GLOBAL, read without
    running it (pickletools). Zip checkpoints: their data.pkl; others: every pickle in a row.
    STACK_GLOBAL takes its two names from the strings pushed just before it (pickle protocol 4)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [name for name in archive.namelist() if name.endswith("data.pkl")]
            streams = [io.BytesIO(archive.read(names[0]))] if names else []
    else:
        streams = [open(path, "rb")]  # noqa: SIM115 (closed below)
    found: list[str] = []
    for stream in streams:
        with stream:
            while True:
                strings: list[str] = []
                names: list[str] = []
                try:  # one pickle stream, to its STOP opcode
                    for opcode, arg, _ in pickletools.genops(stream):
                        if opcode.name in ("GLOBAL", "INST"):
                            names.append(str(arg).replace(" ", "."))
                        elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                            names.append(f"{strings[-2]}.{strings[-1]}")
                        if isinstance(arg, str):
                            strings.append(arg)
                except Exception:  # the end, cut short, or not pickle data (a legacy file's storages)
                    break
                found += names
    return list(dict.fromkeys(found))


def unsafe_globals(path: Path, allowed: Iterable = ()) -> list[str]:
    """The globals of the file's complete pickle streams that neither torch by default nor
    `allowed` allows (read by globals_in, nothing run)."""
    from torch import _weights_only_unpickler

    known = set(_weights_only_unpickler._get_allowed_globals()) | {
        entry[1] if isinstance(entry, tuple) else f"{entry.__module__}.{entry.__qualname__}" for entry in allowed}
    # Protocol 2 pickles (torch.save's) spell Python 3's builtins module the Python 2 way.
    names = [name.replace("__builtin__.", "builtins.", 1) for name in globals_in(path)]
    return [name for name in names if name not in known]


def ultralytics_allowed(names: Iterable[str]) -> list:
    """The allow-list entries for an Ultralytics detector checkpoint that names `names`
    (globals_in): each name that is a torch.nn or Ultralytics layer class, Ultralytics' model
    class, or one of the data classes official checkpoints hold. Names outside these stay out,
    so torch refuses them. Imports only modules of those two packages."""
    import pathlib

    from torch import nn

    allowed: list = [(np.float64(0).__reduce__()[0], f"{module}.multiarray.scalar")
                     for module in ("numpy.core", "numpy._core")] + [np.dtype, type(np.dtype(np.float64))]
    path_class = type(pathlib.Path())
    allowed += [(path_class, f"{module}.{name}") for module in ("pathlib", "pathlib._local")
                for name in ("PosixPath", "WindowsPath")]
    for name in names:
        module, _, attr = name.rpartition(".")
        if name in ("ultralytics.utils.IterableSimpleNamespace", "ultralytics.yolo.utils.IterableSimpleNamespace"):
            from ultralytics.utils import IterableSimpleNamespace

            allowed.append((IterableSimpleNamespace, name))
        elif module.startswith(_LAYER_MODULES) or module == _MODEL_MODULE:
            try:
                obj = getattr(importlib.import_module(module), attr, None)
            except ImportError:
                continue
            # Only classes defined there (not a function or a class imported from elsewhere) that
            # are layers: unpickling one calls object.__new__ and Module.__setstate__, nothing else.
            if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == module:
                allowed.append((obj, name))
    return allowed
