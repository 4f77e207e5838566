"""SimpleBaseline (Xiao et al., ECCV 2018) in Keras 3: a ResNet backbone, three deconvolutions, a 1x1 head.

Structure and layer names follow the official PyTorch PoseResNet
(microsoft/human-pose-estimation.pytorch, lib/models/pose_resnet.py) so a trained checkpoint maps onto
it tensor by tensor: the torch module `layer1.0.conv1` is the Keras layer "layer1_0_conv1",
`deconv_layers.3` (the second BatchNorm of the head) is "deconv_layers_3", and so on (see
keras_layer_name / torch_module_name). Dots would read better, but the torch backend registers Keras
variables as torch parameters, whose names may not contain ".". Layers torch has no parameters for
(padding, the residual add) get names beside their block ("layer1_0_conv2_pad", "layer1_0_add").

Only `keras.layers` is used, so the model is backend-neutral: tests/test_model.py and
tests/test_weights.py pass under KERAS_BACKEND=tensorflow and =torch (JAX is not installed here).

Input (N, H, W, 3) float32, RGB, scaled to 0..1 then normalised with IMAGENET_MEAN / IMAGENET_STD.
Output (N, H/4, W/4, K) heatmaps, NHWC: (N, 64, 48, 17) for a 256 x 192 input.
"""

from dataclasses import dataclass

import keras

# ImageNet statistics the backbone was pre-trained with, RGB, for pixels scaled to 0..1.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Bottleneck blocks per stage (layer1..layer4) for each ResNet depth (He et al. 2016, table 1).
BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}

# BatchNorm epsilon of torch.nn.BatchNorm2d; Keras defaults to 1e-3, which would shift every output.
BN_EPSILON = 1e-5

BOTTLENECK_EXPANSION = 4
STAGE_WIDTHS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)


# The only torch module names that contain "_" themselves; every other "_" in a Keras name was a ".".
# fuse_layers: HRNet's (models/hrnet.py).
_TORCH_NAMES_WITH_UNDERSCORE = ("deconv_layers", "final_layer", "fuse_layers")


def keras_layer_name(torch_name: str) -> str:
    """torch module name -> Keras layer name: 'layer1.0.downsample.0' -> 'layer1_0_downsample_0'."""
    return torch_name.replace(".", "_")


def torch_module_name(keras_name: str) -> str:
    """Keras layer name -> torch module name: 'deconv_layers_3' -> 'deconv_layers.3'."""
    name = keras_name.replace("_", ".")
    for original in _TORCH_NAMES_WITH_UNDERSCORE:
        name = name.replace(original.replace("_", "."), original)
    return name


@dataclass(frozen=True)
class SimpleBaselineConfig:
    """Everything that changes the network's shape. input_size is (H, W)."""

    depth: int = 50
    num_joints: int = 17
    input_size: tuple[int, int] = (256, 192)
    deconv_filters: int = 256
    num_deconv: int = 3

    @property
    def heatmap_size(self) -> tuple[int, int]:
        return heatmap_size(self.input_size, self.num_deconv)


def heatmap_size(input_size: tuple[int, int], num_deconv: int) -> tuple[int, int]:
    """(H, W) of a SimpleBaseline's heatmaps for an (H, W) input: every backbone here divides by 32,
    each stride-2 deconvolution multiplies by 2 (3 of them: a quarter of the input)."""
    stride = 32 // 2**num_deconv
    return input_size[0] // stride, input_size[1] // stride


def _batch_norm(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=name)


def _padded_conv(x, filters: int, kernel: int, stride: int, padding: int, name: str):
    """Conv2D with torch's symmetric zero padding.

    Keras/TF "same" pads stride-2 convolutions asymmetrically (the extra pixel goes to the bottom/right
    only) while torch pads `padding` pixels on every side; with trained weights that shifts every
    feature by half a pixel. Explicit ZeroPadding2D + "valid" reproduces torch exactly on every backend.
    """
    if padding:
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(
        filters, kernel, strides=stride, padding="valid", use_bias=False, name=name
    )(x)


def _bottleneck(x, width: int, stride: int, name: str):
    """torchvision-style Bottleneck (ResNet v1.5): 1x1 -> 3x3 (carries the stride) -> 1x1 (x4 wide)."""
    out_channels = width * BOTTLENECK_EXPANSION
    shortcut = x
    if stride != 1 or x.shape[-1] != out_channels:
        shortcut = _padded_conv(x, out_channels, 1, stride, 0, name=f"{name}_downsample_0")
        shortcut = _batch_norm(f"{name}_downsample_1")(shortcut)

    y = _padded_conv(x, width, 1, 1, 0, name=f"{name}_conv1")
    y = _batch_norm(f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = _padded_conv(y, width, 3, stride, 1, name=f"{name}_conv2")
    y = _batch_norm(f"{name}_bn2")(y)
    y = keras.layers.ReLU(name=f"{name}_relu2")(y)
    y = _padded_conv(y, out_channels, 1, 1, 0, name=f"{name}_conv3")
    y = _batch_norm(f"{name}_bn3")(y)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_relu3")(y)


def build_from_config(config: SimpleBaselineConfig) -> keras.Model:
    """The network for `config`, with freshly initialised weights (load trained ones afterwards)."""
    if config.depth not in BLOCKS_PER_STAGE:
        raise ValueError(f"depth must be one of {sorted(BLOCKS_PER_STAGE)}, got {config.depth}")
    height, width = config.input_size
    if height % 32 or width % 32:
        raise ValueError(f"input_size must be multiples of 32 (the backbone stride), got {config.input_size}")

    inputs = keras.Input((height, width, 3), name="image")
    x = _padded_conv(inputs, 64, 7, 2, 3, name="conv1")
    x = _batch_norm("bn1")(x)
    x = keras.layers.ReLU(name="relu")(x)
    # torch pads max-pooling with -inf; zeros give the same maxima here because the input comes
    # straight out of a ReLU (every window holds at least one real value >= 0).
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="maxpool")(x)

    for stage, (blocks, stage_width, stride) in enumerate(
        zip(BLOCKS_PER_STAGE[config.depth], STAGE_WIDTHS, STAGE_STRIDES), start=1
    ):
        for block in range(blocks):
            x = _bottleneck(x, stage_width, stride if block == 0 else 1, name=f"layer{stage}_{block}")

    heatmaps = deconv_head(x, config.num_joints, config.deconv_filters, config.num_deconv)
    return keras.Model(inputs, heatmaps, name=f"simple_baseline_r{config.depth}")


def deconv_head(x, num_joints: int, filters: int = 256, num_deconv: int = 3):
    """SimpleBaseline's head: num_deconv x (4x4 stride-2 deconvolution, BN, ReLU), then a 1x1 conv.

    (N, h, w, C) backbone features -> (N, h * 2**num_deconv, w * 2**num_deconv, num_joints) heatmaps.
    The same head on every backbone (MMPose's TopdownHeatmapSimpleHead, Microsoft's PoseResNet).
    """
    # torch's ConvTranspose2d(kernel 4, stride 2, padding 1) doubles the size and crops one pixel on
    # each side of the full output; Keras "same" with kernel 4 / stride 2 pads 1 on each side of the
    # equivalent convolution, the same placement (tests/test_weights.py checks it against torch).
    # Indices follow torch's nn.Sequential(ConvTranspose2d, BatchNorm2d, ReLU) * 3.
    for i in range(num_deconv):
        x = keras.layers.Conv2DTranspose(
            filters, 4, strides=2, padding="same", use_bias=False, name=f"deconv_layers_{3 * i}",
        )(x)
        x = _batch_norm(f"deconv_layers_{3 * i + 1}")(x)
        x = keras.layers.ReLU(name=f"deconv_layers_{3 * i + 2}")(x)
    return keras.layers.Conv2D(num_joints, 1, use_bias=True, name="final_layer")(x)


def build_simple_baseline(
    depth: int = 50, num_joints: int = 17, input_size: tuple[int, int] = (256, 192)
) -> keras.Model:
    """SimpleBaseline-ResNet`depth` for (N, H, W, 3) normalised RGB -> (N, H/4, W/4, num_joints) heatmaps.

    depth is 50, 101 or 152; input_size is (H, W), multiples of 32. R50 with 17 joints has
    33,999,697 trainable parameters, like the PyTorch original.
    """
    config = SimpleBaselineConfig(depth=depth, num_joints=num_joints, input_size=tuple(input_size))
    return build_from_config(config)
