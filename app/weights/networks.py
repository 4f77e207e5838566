"""Which network a checkpoint or sidecar describes; one module per network does the work.

The sidecar's "backbone" names it ("resnet" when absent: sidecars older than MobileNetV2); a
checkpoint's keys do (never its file name).
"""

from __future__ import annotations

import numpy as np

from app.weights import mobilenet_v2, resnet


def infer_network(state: dict[str, np.ndarray], source: str = "checkpoint") -> dict:
    """The network a Microsoft-layout state holds, read from its keys and shapes (never its file name).

    Returns what the JSON sidecar records and build_network builds from:
    {"backbone": "resnet", "depth": 50, "num_joints": 17} or
    {"backbone": "mobilenetv2", "widen_factor": 1.0, "num_joints": 17}.
    MobileNetV2 checkpoints (MMPose's mmcv ConvModules) have `conv1.conv.weight` and
    `layer1.0.conv.0.conv.weight`; anything else must be a PoseResNet (infer_architecture).
    """
    if "conv1.conv.weight" in state and "layer1.0.conv.0.conv.weight" in state:
        return mobilenet_v2.infer(state, source)
    return resnet.infer(state, source)


def _module(info: dict):
    """The network module of a description; ValueError for an unknown backbone."""
    backbone = info.get("backbone", "resnet")
    if backbone == "resnet":
        return resnet
    if backbone == "mobilenetv2":
        return mobilenet_v2
    raise ValueError(f"unknown backbone {backbone!r}")


def network_label(info: dict) -> str:
    """'SimpleBaseline-R50' or 'SimpleBaseline-MobileNetV2' (x0.5 when widened) for messages."""
    if info.get("backbone", "resnet") == "mobilenetv2":
        return mobilenet_v2.label(info)
    return resnet.label(info)


def build_network(info: dict, input_size: tuple[int, int] | None = None) -> keras.Model:
    """The Keras network an infer_network / sidecar description names, with fresh weights.

    input_size (H, W) defaults to info["input_size"].
    """
    input_size = tuple(input_size or info["input_size"])
    if info.get("backbone", "resnet") == "mobilenetv2":
        return mobilenet_v2.build(info, input_size)
    return resnet.build(info, input_size)


def network_fields(info: dict) -> dict:
    """The sidecar fields that fix the architecture, type-checked; old sidecars (no "backbone") are ResNets.

    Raises KeyError / ValueError / TypeError for a missing or bad field.
    """
    return _module(info).fields(info)
