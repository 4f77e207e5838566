"""HRNet (Sun et al., CVPR 2019) for top-down pose in Keras 3: SimpleBaseline's successor.

The same pipeline and heatmaps as SimpleBaseline; only the backbone differs: instead of shrinking to
1/32 and growing back with deconvolutions, it keeps a 1/4-resolution branch all the way through and
adds 1/8, 1/16 and 1/32 branches stage by stage, fusing all of them repeatedly (every branch receives
the sum of every other, resampled: strided 3x3 convolutions down, 1x1 convolution + nearest
upsampling up). A 1x1 convolution on the 1/4 branch gives the K heatmaps.

Structure and layer names follow the HRNet authors' PoseHighResolutionNet
(leoxiaobin/deep-high-resolution-net.pytorch, lib/models/pose_hrnet.py, experiments/coco/hrnet/*.yaml),
whose module names MMPose 0.x's HRNet backbone + TopdownHeatmapSimpleHead(num_deconv_layers=0) share
under `backbone.` / `keypoint_head.`: the torch module `stage3.1.fuse_layers.2.0.1.0` is the Keras
layer "stage3_1_fuse_layers_2_0_1_0" (models.simple_baseline.torch_module_name converts back).
Layers torch has no parameters for get names beside their module ("..._pad", "..._relu", "..._up",
"stage2_0_fuse_2_add").

Input (N, H, W, 3) float32, RGB, ImageNet-normalised (as for SimpleBaseline), H and W multiples of 32.
Output (N, H/4, W/4, K) heatmaps: (N, 64, 48, 17) for 256 x 192.
"""

from dataclasses import dataclass

import keras

from models.simple_baseline import _batch_norm, _bottleneck, _padded_conv

# Per stage 2..4 (the yaml's STAGE2..STAGE4): (modules, branches); every branch of every module has
# 4 BasicBlocks. Stage 1 (layer1) is 4 Bottlenecks of width 64. The same for W32 and W48.
STAGES = ((1, 2), (4, 3), (3, 4))
BLOCKS_PER_BRANCH = 4
STEM_CHANNELS = 64
LAYER1_BLOCKS = 4
WIDTHS = (32, 48)  # the published ones: HRNet-W32 and HRNet-W48


@dataclass(frozen=True)
class HRNetConfig:
    """Everything that changes the network's shape. input_size is (H, W); width is W in HRNet-W32."""

    width: int = 32
    num_joints: int = 17
    input_size: tuple[int, int] = (256, 192)

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """(H/4, W/4): the heatmaps come from the 1/4-resolution branch."""
        return self.input_size[0] // 4, self.input_size[1] // 4

    def branch_channels(self, branches: int) -> tuple[int, ...]:
        """Channels of each branch: width, 2 x width, 4 x, 8 x (32, 64, 128, 256 for W32)."""
        return tuple(self.width * 2**branch for branch in range(branches))


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, conv: str = "0", bn: str = "1", relu: bool = True):
    """conv (torch padding kernel // 2) + BatchNorm (+ ReLU): a torch nn.Sequential(Conv2d, BatchNorm2d[, ReLU])
    named `name`, its children `name.<conv>` and `name.<bn>`."""
    x = _padded_conv(x, filters, kernel, stride, kernel // 2, name=f"{name}_{conv}")
    x = _batch_norm(f"{name}_{bn}")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _basic_block(x, name: str):
    """BasicBlock: 3x3 conv, BN, ReLU, 3x3 conv, BN, + x, ReLU. HRNet's branches never change width
    inside a block, so there is no downsample."""
    filters = x.shape[-1]
    y = _padded_conv(x, filters, 3, 1, 1, name=f"{name}_conv1")
    y = _batch_norm(f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = _padded_conv(y, filters, 3, 1, 1, name=f"{name}_conv2")
    y = _batch_norm(f"{name}_bn2")(y)
    y = keras.layers.Add(name=f"{name}_add")([y, x])
    return keras.layers.ReLU(name=f"{name}_relu2")(y)


def _transition(previous: list, channels: tuple[int, ...], name: str) -> list:
    """transitionN: the branches of the next stage from the outputs of the last one.

    An existing branch passes through when its width already matches, else gets a 3x3 conv + BN +
    ReLU (`name.i.0`, `.1`: only transition1, from layer1's 256 channels); the one new branch is a
    strided 3x3 conv + BN + ReLU of the lowest-resolution output (`name.<new>.0.0`, `.0.1`).
    """
    branches = [
        x if x.shape[-1] == channels[i] else _conv_bn(x, channels[i], 3, 1, name=f"{name}_{i}")
        for i, x in enumerate(previous)
    ]
    new = len(previous)
    return [*branches, _conv_bn(previous[-1], channels[new], 3, 2, name=f"{name}_{new}_0")]


def _fuse(branches: list, out_branches: int, name: str) -> list:
    """The exchange unit: output i = ReLU(sum over j of branch j resampled to branch i's size).

    j == i: as is. j > i (lower resolution): 1x1 conv to branch i's width, BN, nearest upsampling by
    2**(j - i) (`name.i.j.0`, `.1`). j < i: i - j strided 3x3 conv + BN, each but the last followed by
    ReLU and keeping branch j's width, the last one reaching branch i's (`name.i.j.k.0`, `.k.1`).
    """
    outputs = []
    for i in range(out_branches):
        width = branches[i].shape[-1]
        terms = []
        for j, x in enumerate(branches):
            prefix = f"{name}_{i}_{j}"
            if j > i:
                x = _conv_bn(x, width, 1, 1, prefix, relu=False)
                x = keras.layers.UpSampling2D(2 ** (j - i), interpolation="nearest", name=f"{prefix}_up")(x)
            elif j < i:
                for k in range(i - j):
                    last = k == i - j - 1
                    x = _conv_bn(x, width if last else x.shape[-1], 3, 2, f"{prefix}_{k}", relu=not last)
            terms.append(x)
        y = keras.layers.Add(name=f"{name.removesuffix('_layers')}_{i}_add")(terms)
        outputs.append(keras.layers.ReLU(name=f"{name.removesuffix('_layers')}_{i}_relu")(y))
    return outputs


def _hr_module(branches: list, multi_scale_output: bool, name: str) -> list:
    """HighResolutionModule: BLOCKS_PER_BRANCH BasicBlocks on every branch, then the fusion
    (only the highest-resolution output when not multi_scale_output: the last module of stage 4)."""
    branches = list(branches)
    for b in range(len(branches)):
        for block in range(BLOCKS_PER_BRANCH):
            branches[b] = _basic_block(branches[b], name=f"{name}_branches_{b}_{block}")
    return _fuse(branches, len(branches) if multi_scale_output else 1, name=f"{name}_fuse_layers")


def build_from_config(config: HRNetConfig) -> keras.Model:
    """The network for `config`, with freshly initialised weights (load trained ones afterwards)."""
    height, width = config.input_size
    if height % 32 or width % 32 or height <= 0 or width <= 0:
        # Branch 4 is at 1/32; torch's nearest upsampling by 8 only lands back on branch 1's size
        # when that division is exact.
        raise ValueError(f"input_size must be multiples of 32 (the lowest branch's stride), got {config.input_size}")

    inputs = keras.Input((height, width, 3), name="image")
    x = _padded_conv(inputs, STEM_CHANNELS, 3, 2, 1, name="conv1")
    x = _batch_norm("bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = _padded_conv(x, STEM_CHANNELS, 3, 2, 1, name="conv2")
    x = _batch_norm("bn2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    for block in range(LAYER1_BLOCKS):
        x = _bottleneck(x, STEM_CHANNELS, 1, name=f"layer1_{block}")

    branches = [x]
    for stage, (modules, count) in enumerate(STAGES, start=2):
        branches = _transition(branches, config.branch_channels(count), name=f"transition{stage - 1}")
        for module in range(modules):
            last = stage == 4 and module == modules - 1
            branches = _hr_module(branches, multi_scale_output=not last, name=f"stage{stage}_{module}")

    heatmaps = keras.layers.Conv2D(config.num_joints, 1, use_bias=True, name="final_layer")(branches[0])
    return keras.Model(inputs, heatmaps, name=f"hrnet_w{config.width}")


def build_hrnet(width: int = 32, num_joints: int = 17, input_size: tuple[int, int] = (256, 192)) -> keras.Model:
    """HRNet-W`width` for (N, H, W, 3) normalised RGB -> (N, H/4, W/4, num_joints) heatmaps.

    width is 32 or 48 (WIDTHS); input_size is (H, W), multiples of 32. W32 with 17 joints has
    28,536,113 trainable parameters, W48 63,595,745, like the PyTorch original.
    """
    if width not in WIDTHS:
        raise ValueError(f"width must be one of {WIDTHS}, got {width}")
    return build_from_config(HRNetConfig(width=width, num_joints=num_joints, input_size=tuple(input_size)))
