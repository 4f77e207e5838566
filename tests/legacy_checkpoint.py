"""Checkpoints in the legacy (pre-zip) torch format, as the published SimpleBaseline files are written.

microsoft/human-pose-estimation.pytorch (2018, torch 0.4) and MMPose's 2020 model zoo (torch <= 1.5)
saved with the legacy format: four pickles in a row (magic number, protocol version, system info,
the object with every tensor storage replaced by a persistent id) followed by the raw storage bytes.
Their tensors were on the GPU when saved, so each persistent id reads
`('storage', torch.cuda.FloatStorage, key, 'cuda:0', numel, None)`, and MMPose's `meta` carries numpy
values pickled by numpy 1.x, which names its module `numpy.core` (numpy 2 writes `numpy._core`).

No GPU here, and torch 2 writes `torch.FloatStorage` whatever the device. So `save_legacy` runs
torch's own legacy writer (`torch.save(..., _use_new_zipfile_serialization=False)`) with a pickler
that rewrites exactly those two things on the way out: the storage class and location of each
persistent id become what torch <= 1.5 wrote for a CUDA tensor on device 0, and numpy's globals get
their numpy-1 module name. The storage bytes that follow are the same either way: torch copies a
CUDA storage to the host and writes its raw bytes. The result is byte for byte the layout of a file
torch 1.5 would have written from a model on cuda:0 (apart from the torch version's system info).
"""

import io
import pickle
import types
from pathlib import Path

import torch


class _LegacyGpuPickler(pickle._Pickler):  # the pure-Python pickler: its save_pers/save_global can be overridden
    cuda = True
    numpy1_names = True

    def save_pers(self, pid):
        if self.cuda and isinstance(pid, tuple) and pid and pid[0] == "storage":
            _, storage_type, key, _location, numel, view = pid
            pid = ("storage", getattr(torch.cuda, storage_type.__name__), key, "cuda:0", numel, view)
        super().save_pers(pid)

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "") or ""
        if self.numpy1_names and module.startswith("numpy._core"):
            # What numpy 1.x writes, e.g. `numpy.core.multiarray scalar` (protocol 2: GLOBAL opcode).
            self.write(pickle.GLOBAL + f"{module.replace('numpy._core', 'numpy.core')}\n{name or obj.__name__}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


def _pickle_module(cuda: bool, numpy1_names: bool) -> types.ModuleType:
    """A module that torch.save accepts as pickle_module (it needs Pickler and dump)."""
    pickler = type("Pickler", (_LegacyGpuPickler,), {"cuda": cuda, "numpy1_names": numpy1_names})
    module = types.ModuleType("legacy_gpu_pickle")
    module.Pickler = pickler
    module.dump = lambda obj, file, protocol=2: pickler(file, protocol).dump(obj)
    return module


def save_legacy(obj, path: Path, cuda: bool = True, numpy1_names: bool = True) -> Path:
    """torch.save(obj) in the legacy format, storages tagged torch.cuda.*Storage on 'cuda:0'."""
    buffer = io.BytesIO()
    torch.save(obj, buffer, pickle_module=_pickle_module(cuda, numpy1_names), _use_new_zipfile_serialization=False)
    Path(path).write_bytes(buffer.getvalue())
    return Path(path)


def pickled_globals_and_locations(path: Path) -> tuple[set[str], set[str]]:
    """The 'module name' globals and the storage locations a legacy file's object pickle references
    (read with pickletools: nothing is run)."""
    import pickletools

    names, strings = set(), []
    with open(path, "rb") as file:
        for _ in range(4):  # magic number, protocol, system info, the object
            for opcode, arg, _ in pickletools.genops(file):
                if opcode.name == "GLOBAL":
                    names.add(arg)
                elif isinstance(arg, str):
                    strings.append(arg)
    return names, {text for text in strings if text == "cpu" or text.startswith("cuda")}
