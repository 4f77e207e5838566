"""Which network a checkpoint or sidecar describes; one module per network does the work.

The sidecar's "backbone" names it ("resnet" when absent: sidecars older than MobileNetV2); a
checkpoint's keys do (never its file name).
"""

from __future__ import annotations

import numpy as np

from app.errors import WeightsError
from app.weights import hrnet, mobilenet_v2, resnet

SUPPORTED = "SimpleBaseline-ResNet-50/101/152, SimpleBaseline-MobileNetV2, HRNet-W32/W48"


def infer_network(state: dict[str, np.ndarray], source: str = "checkpoint") -> dict:
    """The network a Microsoft-layout state holds, read from its keys and shapes (never its file name).

    Returns what the JSON sidecar records and build_network builds from:
    {"backbone": "resnet", "depth": 50, "num_joints": 17} or
    {"backbone": "mobilenetv2", "widen_factor": 1.0, "num_joints": 17} or
    {"backbone": "hrnet", "width": 32, "num_joints": 17}.
    HRNets have `transition1.*` / `stage2.*`; MobileNetV2 checkpoints (MMPose's mmcv ConvModules)
    `conv1.conv.weight` and `layer1.0.conv.0.conv.weight`; PoseResNets `layer1.0.conv1.weight` and
    `final_layer.weight` (infer_architecture). Anything else: WeightsError naming what was found.
    """
    if hrnet.is_hrnet(state):
        return hrnet.infer(state, source)
    if "conv1.conv.weight" in state and "layer1.0.conv.0.conv.weight" in state:
        return mobilenet_v2.infer(state, source)
    if "layer1.0.conv1.weight" in state:  # a PoseResNet; resnet names a missing final_layer itself
        return resnet.infer(state, source)
    raise WeightsError(f"{source} is not a SimpleBaseline or HRNet checkpoint: found {_found(state)}; "
                       f"supported: {SUPPORTED}")


def _found(state: dict[str, np.ndarray]) -> str:
    """'modules conv1, patch_embed, blocks (12 keys), first shapes conv1.weight (64, 3, 3, 3), ...'."""
    modules = list(dict.fromkeys(key.split(".")[0] for key in state))
    shapes = ", ".join(f"{key} {tuple(value.shape)}" for key, value in list(state.items())[:3])
    more = f", ... ({len(modules)} in all)" if len(modules) > 6 else ""
    return f"top-level modules {', '.join(modules[:6])}{more} ({len(state)} tensors), first shapes {shapes}"


def _module(info: dict):
    """The network module of a description; ValueError for an unknown backbone."""
    backbone = info.get("backbone", "resnet")
    if backbone == "resnet":
        return resnet
    if backbone == "mobilenetv2":
        return mobilenet_v2
    if backbone == "hrnet":
        return hrnet
    raise ValueError(f"unknown backbone {backbone!r}")


def network_label(info: dict) -> str:
    """'SimpleBaseline-R50', 'SimpleBaseline-MobileNetV2' (x0.5 when widened) or 'HRNet-W32', for messages."""
    return _module(info).label(info)


def build_network(info: dict, input_size: tuple[int, int] | None = None) -> keras.Model:
    """The Keras network an infer_network / sidecar description names, with fresh weights.

    input_size (H, W) defaults to info["input_size"].
    """
    input_size = tuple(input_size or info["input_size"])
    return _module(info).build(info, input_size)


def network_fields(info: dict) -> dict:
    """The sidecar fields that fix the architecture, type-checked; old sidecars (no "backbone") are ResNets.

    Raises KeyError / ValueError / TypeError for a missing or bad field.
    """
    return _module(info).fields(info)
