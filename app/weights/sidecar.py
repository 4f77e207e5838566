"""The JSON sidecar beside a converted `<name>.weights.h5`: source, its sha256, the network, input size."""

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
    path = sidecar_path(weights_path)
    try:
        info = json.loads(path.read_text())
        network = network_fields(info)  # backbone, and depth or widen_factor
        joints = int(info["num_joints"])
        height, width = (int(v) for v in info["input_size"])
    except FileNotFoundError:
        raise WeightsError(f"{path} is missing, so {weights_path} cannot be built; convert again: {CONVERT_HINT}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise WeightsError(f"{path} is not a valid weights description ({error}); convert again: {CONVERT_HINT}") from None
    return {**info, **network, "num_joints": joints, "input_size": (height, width)}

