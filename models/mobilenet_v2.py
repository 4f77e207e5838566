"""SimpleBaseline with a MobileNetV2 backbone (MMPose's `pose_mobilenetv2`) in Keras 3.

The fast model for CPUs: MMPose trained the same three-deconvolution head as SimpleBaseline-ResNet
on MobileNetV2 (Sandler et al., CVPR 2018): 1.5 G multiply-adds per 256 x 192 person against R50's 5.4,
COCO val2017 AP 64.6 against 71.8 (MMPose's model zoo).

Structure and layer names follow MMPose 0.x (mmpose/models/backbones/mobilenet_v2.py, built from
mmcv's ConvModule = conv + bn + activate, ReLU6) so a checkpoint maps onto it tensor by tensor:
`backbone.layer2.0.conv.1.conv` (the depthwise 3x3 of the first block of stage 2) is the Keras layer
"layer2_0_conv_1_conv", `backbone.conv2.bn` is "conv2_bn", the head is `deconv_head` of
models/simple_baseline.py ("deconv_layers_0" ... "final_layer"). keras_layer_name / torch_module_name
of that module convert both ways. Layers torch has no parameters for get names beside their module
("layer2_0_conv_1_conv_pad", "layer2_1_add").

Input (N, H, W, 3) float32, RGB, ImageNet-normalised (as for the ResNet). Output (N, H/4, W/4, K).
"""

from dataclasses import dataclass

import keras

from models.simple_baseline import BN_EPSILON, deconv_head, heatmap_size

# (expand ratio, output channels, blocks, stride of the first block) per stage layer1..layer7:
# MobileNetV2 table 2, as MMPose's MobileNetV2.arch_settings has it.
ARCH_SETTINGS = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280  # the final 1x1 conv ("conv2"), MMPose's out_indices=(7,): the head reads it
RELU6_MAX = 6.0


def make_divisible(value: float, divisor: int = 8, min_ratio: float = 0.9) -> int:
    """Round a channel count to the nearest multiple of `divisor`, never below 90% of it.

    The rule MobileNet implementations (and mmcv/MMPose's make_divisible) use for widen_factor;
    with widen_factor 1.0 every width is already a multiple of 8.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < min_ratio * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class MobileNetV2Config:
    """Everything that changes the network's shape. input_size is (H, W)."""

    widen_factor: float = 1.0
    num_joints: int = 17
    input_size: tuple[int, int] = (256, 192)
    deconv_filters: int = 256
    num_deconv: int = 3

    @property
    def heatmap_size(self) -> tuple[int, int]:
        return heatmap_size(self.input_size, self.num_deconv)

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Output channels of conv1, layer1..layer7 and conv2, as MMPose computes them."""
        stages = tuple(make_divisible(channels * self.widen_factor) for _, channels, _, _ in ARCH_SETTINGS)
        last = int(LAST_CHANNELS * self.widen_factor) if self.widen_factor > 1.0 else LAST_CHANNELS
        return (make_divisible(STEM_CHANNELS * self.widen_factor), *stages, last)


def _conv_module(x, filters: int, kernel: int, stride: int, name: str, depthwise: bool = False,
                 activate: bool = True):
    """mmcv ConvModule: conv (no bias: a BN follows) -> BN -> ReLU6, torch's symmetric padding.

    Keras "same" would pad a stride-2 3x3 convolution only at the bottom/right, torch pads one pixel
    on every side: explicit ZeroPadding2D + "valid" reproduces torch on every backend.
    """
    padding = kernel // 2
    if padding:
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}_conv_pad")(x)
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="valid", use_bias=False,
                                         name=f"{name}_conv")(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="valid", use_bias=False,
                                name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    if activate:
        x = keras.layers.ReLU(max_value=RELU6_MAX, name=f"{name}_activate")(x)
    return x


def _inverted_residual(x, out_channels: int, stride: int, expand_ratio: int, name: str):
    """MobileNetV2 block: 1x1 expand (absent when expand_ratio is 1) -> 3x3 depthwise (carries the
    stride) -> 1x1 linear projection; plus the input when stride 1 keeps the channel count."""
    in_channels = x.shape[-1]
    hidden = make_divisible(round(in_channels * expand_ratio))
    y = x
    index = 0  # position in torch's nn.Sequential `conv`
    if expand_ratio != 1:
        y = _conv_module(y, hidden, 1, 1, name=f"{name}_conv_{index}")
        index += 1
    y = _conv_module(y, hidden, 3, stride, name=f"{name}_conv_{index}", depthwise=True)
    y = _conv_module(y, out_channels, 1, 1, name=f"{name}_conv_{index + 1}", activate=False)
    if stride == 1 and in_channels == out_channels:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def build_from_config(config: MobileNetV2Config) -> keras.Model:
    """The network for `config`, with freshly initialised weights (load trained ones afterwards)."""
    height, width = config.input_size
    if height % 32 or width % 32:
        raise ValueError(f"input_size must be multiples of 32 (the backbone stride), got {config.input_size}")
    if config.widen_factor <= 0:
        raise ValueError(f"widen_factor must be positive, got {config.widen_factor}")

    channels = config.stage_channels
    inputs = keras.Input((height, width, 3), name="image")
    x = _conv_module(inputs, channels[0], 3, 2, name="conv1")
    for stage, ((expand_ratio, _, blocks, stride), out_channels) in enumerate(
        zip(ARCH_SETTINGS, channels[1:-1]), start=1
    ):
        for block in range(blocks):
            x = _inverted_residual(x, out_channels, stride if block == 0 else 1, expand_ratio,
                                   name=f"layer{stage}_{block}")
    x = _conv_module(x, channels[-1], 1, 1, name="conv2")

    heatmaps = deconv_head(x, config.num_joints, config.deconv_filters, config.num_deconv)
    return keras.Model(inputs, heatmaps, name="simple_baseline_mobilenetv2")


def build_pose_mobilenet_v2(
    num_joints: int = 17, input_size: tuple[int, int] = (256, 192), widen_factor: float = 1.0
) -> keras.Model:
    """SimpleBaseline-MobileNetV2 for (N, H, W, 3) normalised RGB -> (N, H/4, W/4, num_joints) heatmaps.

    input_size is (H, W), multiples of 32. With widen_factor 1.0 and 17 joints it has the trainable
    parameters of MMPose's pose_mobilenetv2 (tests/test_mobilenet.py counts them against torch).
    """
    return build_from_config(MobileNetV2Config(widen_factor=widen_factor, num_joints=num_joints,
                                               input_size=tuple(input_size)))
