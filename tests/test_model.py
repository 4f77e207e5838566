"""The Keras SimpleBaseline has the PyTorch original's structure: sizes, parameter counts, layer names."""

import keras
import numpy as np
import pytest

from models.simple_baseline import (
    SimpleBaselineConfig,
    build_simple_baseline,
    keras_layer_name,
    torch_module_name,
)
from torch_reference import PoseResNet

R50_TRAINABLE_PARAMETERS = 33_999_697  # the official PoseResNet-50, 17 joints


def trainable_parameters(model) -> int:
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


@pytest.fixture(scope="module")
def r50():
    return build_simple_baseline()


def test_r50_has_the_official_parameter_count(r50):
    assert trainable_parameters(r50) == R50_TRAINABLE_PARAMETERS
    assert sum(p.numel() for p in PoseResNet(50).parameters()) == R50_TRAINABLE_PARAMETERS


def test_r50_maps_256x192_images_to_64x48_heatmaps(r50):
    batch = np.random.default_rng(0).standard_normal((2, 256, 192, 3)).astype(np.float32)
    heatmaps = keras.ops.convert_to_numpy(r50(batch, training=False))
    assert heatmaps.shape == (2, 64, 48, 17)
    assert heatmaps.dtype == np.float32
    assert np.isfinite(heatmaps).all()
    assert SimpleBaselineConfig().heatmap_size == (64, 48)


def test_384x288_input_gives_96x72_heatmaps_with_any_joint_count():
    model = build_simple_baseline(50, num_joints=5, input_size=(384, 288))
    batch = np.zeros((1, 384, 288, 3), np.float32)
    assert tuple(keras.ops.convert_to_numpy(model(batch, training=False)).shape) == (1, 96, 72, 5)
    assert SimpleBaselineConfig(input_size=(384, 288)).heatmap_size == (96, 72)


@pytest.mark.parametrize("depth", [101, 152])
def test_deeper_backbones_match_torch_parameter_count(depth):
    model = build_simple_baseline(depth)
    assert trainable_parameters(model) == sum(p.numel() for p in PoseResNet(depth).parameters())


def test_every_torch_module_with_weights_has_a_keras_layer_of_the_same_name(r50):
    # The converter maps tensors by these names; a renamed layer would strand a checkpoint tensor.
    torch_modules = {key.rsplit(".", 1)[0] for key in PoseResNet(50).state_dict()}
    keras_layers_with_weights = {layer.name for layer in r50.layers if layer.weights}
    assert {keras_layer_name(name) for name in torch_modules} == keras_layers_with_weights
    assert {torch_module_name(name) for name in keras_layers_with_weights} == torch_modules
    assert keras_layer_name("layer3.5.downsample.0") == "layer3_5_downsample_0"
    assert torch_module_name("deconv_layers_4") == "deconv_layers.4"


def test_batch_norm_uses_torch_epsilon(r50):
    epsilons = {layer.epsilon for layer in r50.layers if type(layer).__name__ == "BatchNormalization"}
    assert epsilons == {1e-5}


@pytest.mark.parametrize("kwargs", [{"depth": 34}, {"input_size": (250, 192)}])
def test_unsupported_shapes_are_refused(kwargs):
    with pytest.raises(ValueError):
        build_simple_baseline(**kwargs)
