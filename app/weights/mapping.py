"""Copying a Microsoft-layout state onto the Keras layers: one torch key per Keras weight, shapes checked.

Layer names give the torch module (models.simple_baseline.torch_module_name); only the layout of
the tensors changes (NCHW kernels -> HWIO).
"""

from __future__ import annotations

import numpy as np

from app.errors import WeightsError


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

