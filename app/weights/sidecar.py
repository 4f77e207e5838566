"""The JSON sidecar beside a converted `<name>.weights.h5`: source, its sha256, the network, input
size, and whether it was trained with UDP's geometry ("udp")."""

from __future__ import annotations

import json
from pathlib import Path

from app.errors import WeightsError
from app.weights.files import CONVERT_HINT, KERAS_SUFFIX
from app.weights.networks import network_fields


def sidecar_path(weights_path: Path) -> Path:
    """weights/<name>.weights.h5 -> weights/<name>.json."""
    weights_path = Path(weights_path)
    return weights_path.with_name(weights_path.name.removesuffix(KERAS_SUFFIX) + ".json")


def read_sidecar(weights_path: Path) -> dict:
    """The JSON beside a converted weights file, checked for the fields the model is built from."""
    from app.weights.conversion import input_size_problem

    path = sidecar_path(weights_path)
    try:
        info = json.loads(path.read_text())
        if not isinstance(info, dict):
            raise TypeError(f"a JSON {type(info).__name__}, not an object")
        network = network_fields(info)  # backbone, and depth or widen_factor
        joints = int(info["num_joints"])
        if joints < 1:
            raise ValueError(f"num_joints {joints} is not positive")
        size = info["input_size"]
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise ValueError(f"input_size {size!r} is not [height, width]")
        height, width = (int(v) for v in size)
        if (problem := input_size_problem((height, width))) is not None:
            raise ValueError(f"input_size {height}x{width}: {problem}")
        udp = info.get("udp", False)  # absent in files converted before UDP was read
        if not isinstance(udp, bool):
            raise ValueError(f"udp {udp!r} is not true or false")
    except FileNotFoundError:
        raise WeightsError(f"{path} is missing, so {weights_path} cannot be built; convert again: {CONVERT_HINT}") from None
    except (ValueError, KeyError, TypeError, OverflowError) as error:  # json.JSONDecodeError is a ValueError
        reason = f"no {error}" if isinstance(error, KeyError) else str(error)
        raise WeightsError(f"{path} is not a valid weights description ({reason}); convert again: {CONVERT_HINT}") from None
    except OSError as error:
        if path.is_dir():  # IsADirectoryError; on Windows a PermissionError
            raise WeightsError(f"{path} is a folder, not the weights description; "
                               f"convert again: {CONVERT_HINT}") from None
        raise WeightsError(f"cannot read {path} ({error.strerror or error}); convert again: {CONVERT_HINT}") from None
    return {**info, **network, "num_joints": joints, "input_size": (height, width), "udp": udp}

