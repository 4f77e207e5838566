"""Keras -> ONNX: a small exporter for the layer types SimpleBaseline and HRNet use.

Written by hand, and kept after trying the alternatives (issue 18, docs/benchmarks.md): Keras' own
`model.export(format="onnx")` (through tf2onnx 1.17.0, which does install beside TensorFlow 2.21 and
numpy 2, though it is not pinned) gives the same heatmaps but a graph ONNX Runtime runs with 3-14%
more CPU time per person; OpenVINO's convert_model of the Keras model matches this graph's speed in
OpenVINO but gives ONNX Runtime nothing. `app.runtime` runs this graph with ONNX Runtime and with
OpenVINO and caches it beside the weights.

    proto = export_onnx(model)        # onnx.ModelProto: (N, H, W, 3) NHWC in -> (N, h, w, K) NHWC out
"""

from dataclasses import dataclass, field

import keras
import numpy as np

from app.runtime.onnx_runner import EXPORTER_VERSION  # bump it there when the graph written here changes

ONNX_OPSET = 17
ONNX_IR_VERSION = 8  # opset 17's IR version; onnx would stamp its newest, which older ONNX Runtimes refuse


class OnnxExportError(ValueError):
    """The Keras model holds something export_onnx cannot translate exactly."""


def model_io_shape(model: keras.Model) -> tuple[tuple[int, int], tuple[int, int], int]:
    """(input (H, W), heatmap (h, w), K) of a single-input, single-output NHWC model."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"a pose model has one input and one output; {model.name} has "
                         f"{len(model.inputs)} and {len(model.outputs)}")
    _, height, width, channels = model.inputs[0].shape
    _, out_h, out_w, joints = model.outputs[0].shape
    if None in (height, width, out_h, out_w, joints) or channels != 3:
        raise ValueError(f"{model.name} needs a fixed (H, W, 3) input, has {model.inputs[0].shape}")
    return (height, width), (out_h, out_w), joints


# --- Keras -> ONNX -----------------------------------------------------------------------------------
#
# Written by hand (see the module docstring for why not tf2onnx). It walks the functional model's
# layers in graph order and emits NCHW ONNX, the layout ONNX Runtime's CPU convolutions are built
# for, with one Transpose at the input and one at the output so the runner keeps the NHWC contract.
# Exactness over generality: every layer type below maps onto ONNX operators with the same
# arithmetic, anything else raises OnnxExportError naming the layer.

SUPPORTED_LAYERS = (
    "InputLayer", "ZeroPadding2D", "Conv2D", "DepthwiseConv2D", "Conv2DTranspose", "BatchNormalization",
    "ReLU (max_value allowed: ReLU6)", "Activation (relu, linear)", "MaxPooling2D", "Add",
    "UpSampling2D (nearest)",
)


@dataclass
class _Value:
    """An NCHW tensor of the ONNX graph standing for one Keras tensor.

    pads: zero padding (top, left, bottom, right) a ZeroPadding2D asked for and that is not applied
    yet: a following Conv absorbs it into its `pads`, anything else gets an explicit Pad.
    non_negative: produced by a Relu, so zero padding equals MaxPool's -inf padding on it.
    """

    name: str
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    non_negative: bool = False


@dataclass
class _Conv:
    """An emitted Conv / ConvTranspose whose weights a following BatchNormalization may fold into."""

    layer_name: str
    node: object  # onnx.NodeProto
    weight: str
    bias: str | None
    out_axis: int  # output channels' axis in the ONNX weight: 0 for Conv, 1 for ConvTranspose


@dataclass
class _Graph:
    nodes: list = field(default_factory=list)
    arrays: dict = field(default_factory=dict)  # initializer name -> numpy array
    values: dict = field(default_factory=dict)  # id(Keras tensor) -> _Value
    convs: dict = field(default_factory=dict)  # id(Keras tensor) -> _Conv that produced it
    uses: dict = field(default_factory=dict)  # id(Keras tensor) -> number of consumers
    padded: set = field(default_factory=set)  # names of the Pad outputs already emitted

    def node(self, op: str, inputs: list[str], output: str, **attributes):
        import onnx

        node = onnx.helper.make_node(op, inputs, [output], name=output, **attributes)
        self.nodes.append(node)
        return node

    def constant(self, name: str, array: np.ndarray) -> str:
        self.arrays[name] = array
        return name

    def materialized(self, tensor) -> str:
        """Name of the tensor with any pending zero padding applied."""
        value = self.values[id(tensor)]
        if value.pads == (0, 0, 0, 0):
            return value.name
        top, left, bottom, right = value.pads
        name = f"{value.name}_padded_{top}_{left}_{bottom}_{right}"
        if name not in self.padded:
            self.padded.add(name)
            pads = self.constant(f"{name}_pads", np.array([0, 0, top, left, 0, 0, bottom, right], np.int64))
            self.node("Pad", [value.name, pads], name, mode="constant")
        return name


def _to_numpy(variable) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float64)


def _layer_input(layer):
    """The layer's single input tensor (or list for Add), with a clear error for shared layers."""
    try:
        return layer.input
    except (ValueError, AttributeError) as error:
        raise OnnxExportError(f"layer {layer.name!r} is used more than once ({error}); cannot export it") from None


def conv_kernel_oihw(layer, kernel: np.ndarray) -> tuple[np.ndarray, int]:
    """A Keras Conv2D / DepthwiseConv2D kernel (kh, kw, in / groups, out) as ONNX's and torch's
    (out, in / groups, kh, kw), and its group count. Keras' depthwise kernel (kh, kw, C, m): output
    channel c * m + j filters input channel c alone, which is a grouped conv with groups = C and
    weight (C * m, 1, kh, kw), in the same order."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw, channels, multiplier = kernel.shape
        return kernel.reshape(kh, kw, 1, channels * multiplier).transpose(3, 2, 0, 1), channels
    return kernel.transpose(3, 2, 0, 1), layer.groups


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(before, after) padding of TF's "same" for one spatial axis: the odd pixel goes after."""
    effective = (kernel - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def transposed_same_crop(kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) that Keras' "same" Conv2DTranspose crops from the full output
    ((in - 1) * stride + kernel): kernel - stride per axis, the smaller half at the start."""
    crop_h, crop_w = kernel[0] - stride[0], kernel[1] - stride[1]
    return crop_h // 2, crop_w // 2, crop_h - crop_h // 2, crop_w - crop_w // 2


def _check_channels_last(layer) -> None:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise OnnxExportError(f"layer {layer.name!r} is {layer.data_format}; export_onnx expects channels_last")


def _linear_or_relu(layer) -> str:
    """"linear" or "relu" for a layer's fused activation; anything else cannot be exported."""
    if layer.activation is keras.activations.linear:
        return "linear"
    if layer.activation is keras.activations.relu:
        return "relu"
    raise OnnxExportError(
        f"layer {layer.name!r} has activation {getattr(layer.activation, '__name__', layer.activation)!r}; "
        "export_onnx handles linear and relu"
    )


def _export_conv(graph: _Graph, layer, source, output) -> None:
    _check_channels_last(layer)
    value = graph.values[id(source)]
    _, height, width, _ = source.shape  # includes the pending padding (a ZeroPadding2D output)
    if height is None or width is None:
        raise OnnxExportError(f"layer {layer.name!r} needs a fixed input height and width")
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.strides, layer.dilation_rate
    top, left, bottom, right = value.pads
    if layer.padding == "same":
        # The input already carries the pending pads in its shape; "same" pads that size further.
        before_h, after_h = same_pads(height, kh, sh, dh)
        before_w, after_w = same_pads(width, kw, sw, dw)
        top, bottom, left, right = top + before_h, bottom + after_h, left + before_w, right + after_w
    elif layer.padding != "valid":
        raise OnnxExportError(f"layer {layer.name!r} has padding {layer.padding!r}; export_onnx handles valid and same")

    name = f"{layer.name}_out"
    kernel, groups = conv_kernel_oihw(layer, _to_numpy(layer.kernel))
    weight = graph.constant(f"{layer.name}_W", kernel)
    bias = graph.constant(f"{layer.name}_B", _to_numpy(layer.bias)) if layer.use_bias else None
    node = graph.node(
        "Conv", [value.name, weight] + ([bias] if bias else []), name,
        kernel_shape=[kh, kw], strides=[sh, sw], dilations=[dh, dw], group=groups,
        pads=[top, left, bottom, right],
    )
    _finish_conv(graph, layer, output, _Conv(layer.name, node, weight, bias, out_axis=0), name)


def _export_conv_transpose(graph: _Graph, layer, source, output) -> None:
    _check_channels_last(layer)
    (kh, kw), (sh, sw) = layer.kernel_size, layer.strides
    if tuple(layer.dilation_rate) != (1, 1) or layer.output_padding is not None:
        raise OnnxExportError(f"layer {layer.name!r}: export_onnx handles Conv2DTranspose without dilation "
                              "or output_padding")
    if kh < sh or kw < sw:
        raise OnnxExportError(f"layer {layer.name!r}: a kernel smaller than its stride is not handled")
    if layer.padding == "same":
        # Keras "same" makes the output exactly input * stride: the transposed convolution's full
        # output ((in - 1) * stride + kernel) cropped by kernel - stride, the smaller half at the
        # start, the same split as "same" for the forward convolution. ONNX `pads` crop the same way.
        pads = list(transposed_same_crop((kh, kw), (sh, sw)))
    elif layer.padding == "valid":
        pads = [0, 0, 0, 0]
    else:
        raise OnnxExportError(f"layer {layer.name!r} has padding {layer.padding!r}; export_onnx handles valid and same")

    name = f"{layer.name}_out"
    # Keras kernel (kh, kw, out, in) -> ONNX ConvTranspose (in, out, kh, kw).
    weight = graph.constant(f"{layer.name}_W", _to_numpy(layer.kernel).transpose(3, 2, 0, 1))
    bias = graph.constant(f"{layer.name}_B", _to_numpy(layer.bias)) if layer.use_bias else None
    node = graph.node(
        "ConvTranspose", [graph.materialized(source), weight] + ([bias] if bias else []), name,
        kernel_shape=[kh, kw], strides=[sh, sw], pads=pads,
    )
    _finish_conv(graph, layer, output, _Conv(layer.name, node, weight, bias, out_axis=1), name)


def _finish_conv(graph: _Graph, layer, output, conv: _Conv, name: str) -> None:
    if _linear_or_relu(layer) == "relu":
        graph.node("Relu", [name], f"{layer.name}_relu")
        graph.values[id(output)] = _Value(f"{layer.name}_relu", non_negative=True)
    else:
        graph.values[id(output)] = _Value(name)
        graph.convs[id(output)] = conv


def _export_batch_norm(graph: _Graph, layer, source, output) -> None:
    if layer.axis not in (-1, 3):
        raise OnnxExportError(f"layer {layer.name!r} normalises axis {layer.axis}; export_onnx expects the channels")
    channels = source.shape[-1]
    gamma = _to_numpy(layer.gamma) if layer.scale else np.ones(channels)
    beta = _to_numpy(layer.beta) if layer.center else np.zeros(channels)
    scale = gamma / np.sqrt(_to_numpy(layer.moving_variance) + layer.epsilon)
    shift = beta - _to_numpy(layer.moving_mean) * scale

    conv = graph.convs.get(id(source))
    if conv is not None and graph.uses.get(id(source)) == 1:
        # Inference BatchNorm is a per-channel affine map, so it folds into the convolution before
        # it: W' = W * scale per output channel, b' = b * scale + shift. Saves a pass over the
        # activations per layer; computed in float64 so the fold itself adds no rounding.
        shape = [1, 1, 1, 1]
        shape[conv.out_axis] = channels
        graph.arrays[conv.weight] = graph.arrays[conv.weight] * scale.reshape(shape)
        bias = graph.arrays[conv.bias] if conv.bias else np.zeros(channels)
        if conv.bias is None:
            conv.bias = f"{conv.layer_name}_B"
            conv.node.input.append(conv.bias)
        graph.arrays[conv.bias] = bias * scale + shift
        graph.values[id(output)] = _Value(graph.values[id(source)].name)
        graph.convs[id(output)] = conv
        return
    name = f"{layer.name}_out"
    scale_name = graph.constant(f"{layer.name}_scale", scale.reshape(1, channels, 1, 1))
    shift_name = graph.constant(f"{layer.name}_shift", shift.reshape(1, channels, 1, 1))
    graph.node("Mul", [graph.materialized(source), scale_name], f"{layer.name}_scaled")
    graph.node("Add", [f"{layer.name}_scaled", shift_name], name)
    graph.values[id(output)] = _Value(name)


def _export_max_pool(graph: _Graph, layer, source, output) -> None:
    _check_channels_last(layer)
    value = graph.values[id(source)]
    if value.pads != (0, 0, 0, 0) and not value.non_negative:
        # ONNX MaxPool pads with -inf, not zeros, and an explicit zero Pad in front does not help:
        # ONNX Runtime's PadFusion (onnxruntime/core/optimizer/pad_fusion.cc, 1.31) merges it into
        # the MaxPool's pads, so windows of negative values would lose their zero.
        raise OnnxExportError(
            f"layer {layer.name!r}: zero padding before a MaxPooling2D exports exactly only after a ReLU"
        )
    _, height, width, _ = source.shape  # includes the pending padding
    (kh, kw), (sh, sw) = layer.pool_size, layer.strides
    # After a ReLU every window holds a value >= 0, so MaxPool's -inf padding gives the same maxima
    # as the zeros ZeroPadding2D asked for; "same" never picks a padded position in TF or ONNX.
    top, left, bottom, right = value.pads
    if layer.padding == "same":
        before_h, after_h = same_pads(height, kh, sh, 1)
        before_w, after_w = same_pads(width, kw, sw, 1)
        top, bottom, left, right = top + before_h, bottom + after_h, left + before_w, right + after_w
    elif layer.padding != "valid":
        raise OnnxExportError(f"layer {layer.name!r} has padding {layer.padding!r}; export_onnx handles valid and same")
    graph.node("MaxPool", [value.name], f"{layer.name}_out",
               kernel_shape=[kh, kw], strides=[sh, sw], pads=[top, left, bottom, right])
    graph.values[id(output)] = _Value(f"{layer.name}_out", non_negative=value.non_negative)


def _export_relu(graph: _Graph, layer, source, output) -> None:
    """ReLU layers and Activation("relu") -> Relu; ReLU(max_value=6) (ReLU6) -> Clip(0, 6);
    Activation("linear") passes its input on."""
    if isinstance(layer, keras.layers.ReLU):
        if layer.negative_slope or layer.threshold:
            raise OnnxExportError(f"layer {layer.name!r} is a ReLU with negative_slope or threshold; "
                                  "export_onnx handles max(x, 0), capped by max_value")
        if layer.max_value is not None:
            # min(max(x, 0), max_value) is Clip exactly; ONNX Runtime fuses it into the Conv before.
            low = graph.constant(f"{layer.name}_min", np.array(0.0, np.float32))
            high = graph.constant(f"{layer.name}_max", np.array(layer.max_value, np.float32))
            graph.node("Clip", [graph.materialized(source), low, high], f"{layer.name}_out")
            graph.values[id(output)] = _Value(f"{layer.name}_out", non_negative=True)
            return
    elif _linear_or_relu(layer) == "linear":
        graph.values[id(output)] = graph.values[id(source)]
        if id(source) in graph.convs and graph.uses.get(id(source)) == 1:
            graph.convs[id(output)] = graph.convs[id(source)]  # a BatchNorm after it still folds
        return
    graph.node("Relu", [graph.materialized(source)], f"{layer.name}_out")
    graph.values[id(output)] = _Value(f"{layer.name}_out", non_negative=True)


def _export_add(graph: _Graph, layer, sources, output) -> None:
    names = [graph.materialized(tensor) for tensor in sources]
    graph.node("Add" if len(names) == 2 else "Sum", names, f"{layer.name}_out")
    non_negative = all(graph.values[id(tensor)].non_negative for tensor in sources)
    graph.values[id(output)] = _Value(f"{layer.name}_out", non_negative=non_negative)


def _export_upsampling(graph: _Graph, layer, source, output) -> None:
    """UpSampling2D(nearest, integer factors) -> Resize(nearest): every pixel repeated, as torch's
    nn.Upsample(scale_factor, mode="nearest") in HRNet's fusion. "asymmetric" + "floor" maps output
    pixel o to input pixel floor(o / factor), which is exactly the repetition."""
    _check_channels_last(layer)
    if layer.interpolation != "nearest":
        raise OnnxExportError(f"layer {layer.name!r} upsamples with {layer.interpolation!r}; export_onnx "
                              "handles nearest only")
    rows, cols = (int(factor) for factor in layer.size)
    scales = graph.constant(f"{layer.name}_scales", np.array([1, 1, rows, cols], np.float32))
    graph.node("Resize", [graph.materialized(source), "", scales], f"{layer.name}_out", mode="nearest",
               coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    graph.values[id(output)] = _Value(f"{layer.name}_out", non_negative=graph.values[id(source)].non_negative)


def _export_zero_padding(graph: _Graph, layer, source, output) -> None:
    _check_channels_last(layer)
    (top, bottom), (left, right) = layer.padding
    value = graph.values[id(source)]
    old_top, old_left, old_bottom, old_right = value.pads
    graph.values[id(output)] = _Value(
        value.name, (old_top + top, old_left + left, old_bottom + bottom, old_right + right), value.non_negative
    )


def _subpixel_deconvolutions(graph: _Graph) -> None:
    """Rewrite every ConvTranspose(kernel 4, stride 2, pads 1) as four 2x2 Convs + DepthToSpace.

    The same sums in another order: output pixel (2m + a, 2n + b) of such a transposed convolution
    only ever meets kernel rows (3, 1) at input rows (m - 1, m) when a = 0 and rows (2, 0) at
    (m, m + 1) when a = 1 (columns alike), so each of the four output phases is an ordinary 2x2
    convolution of the input, padded on the side it reaches past. ONNX Runtime runs those with its
    blocked (NCHWc) convolutions, which its ConvTranspose does not use: the same multiply-adds in
    8-10% less CPU time for the whole SimpleBaseline-MobileNetV2, 4% for R50, on a 2-core AVX-512
    EPYC (`python -m benchmarks.model_bench --models r50,mobilenetv2 --compare-deconv`,
    docs/benchmarks.md). Runs after BatchNorm folding, on the folded weights and bias.
    """
    import onnx

    taps = ((3, 1), (2, 0))  # kernel rows (or columns) meeting the two input rows, for phase 0 and 1
    nodes = []
    for node in graph.nodes:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "ConvTranspose" or attributes.get("kernel_shape") != [4, 4]
                or attributes.get("strides") != [2, 2] or attributes.get("pads") != [1, 1, 1, 1]
                or attributes.get("group", 1) != 1 or attributes.get("dilations", [1, 1]) != [1, 1]):
            nodes.append(node)
            continue
        source, weight_name, *bias = node.input
        weight = graph.arrays.pop(weight_name)  # (in, out, 4, 4), ONNX ConvTranspose's layout
        output = node.output[0]
        phases = []
        for a in (0, 1):
            for b in (0, 1):
                kernel = weight[:, :, list(taps[a]), :][:, :, :, list(taps[b])].transpose(1, 0, 2, 3)
                name = graph.constant(f"{weight_name}_phase{a}{b}", np.ascontiguousarray(kernel))
                phase = f"{output}_phase{a}{b}"
                nodes.append(onnx.helper.make_node(
                    "Conv", [source, name, *bias], [phase], name=phase, kernel_shape=[2, 2],
                    pads=[1 - a, 1 - b, a, b],
                ))
                phases.append(phase)
        # Channels [phase (a, b)][c] -> pixel (2m + a, 2n + b) of channel c: DepthToSpace's DCR order.
        nodes.append(onnx.helper.make_node("Concat", phases, [f"{output}_phases"], name=f"{output}_phases", axis=1))
        nodes.append(onnx.helper.make_node("DepthToSpace", [f"{output}_phases"], [output], name=output,
                                           blocksize=2, mode="DCR"))
    graph.nodes = nodes


def export_onnx(model: keras.Model, metadata: dict[str, str] | None = None, subpixel: bool = True):
    """ONNX graph of a functional Keras model: input (N, H, W, 3) NHWC -> output (N, h, w, K) NHWC.

    N is a dynamic dimension. BatchNormalization folds into the convolution before it and
    ZeroPadding2D into the Conv (or MaxPool after a ReLU) after it. subpixel: write 4x4 stride-2
    deconvolutions (SimpleBaseline's head) as four 2x2 convolutions each, which ONNX Runtime runs
    faster (_subpixel_deconvolutions). Layers other than SUPPORTED_LAYERS raise OnnxExportError.
    metadata goes into the model's metadata_props. Returns an onnx.ModelProto (checked with onnx.checker).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if not getattr(model, "inputs", None):
        raise OnnxExportError(f"{model.name} has no symbolic inputs: export_onnx needs a functional "
                              "(or Sequential) Keras model, whose layers form a graph it can walk")
    (height, width), (out_h, out_w), joints = model_io_shape(model)
    graph = _Graph()
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        for tensor in keras.tree.flatten(_layer_input(layer)):
            graph.uses[id(tensor)] = graph.uses.get(id(tensor), 0) + 1
    for tensor in model.outputs:
        graph.uses[id(tensor)] = graph.uses.get(id(tensor), 0) + 1

    (model_input,), (model_output,) = model.inputs, model.outputs
    graph.node("Transpose", ["image"], "image_nchw", perm=[0, 3, 1, 2])
    graph.values[id(model_input)] = _Value("image_nchw")

    exporters = {
        keras.layers.ZeroPadding2D: _export_zero_padding,
        keras.layers.Conv2DTranspose: _export_conv_transpose,  # before Conv2D: check exact types below
        keras.layers.Conv2D: _export_conv,
        keras.layers.DepthwiseConv2D: _export_conv,
        keras.layers.BatchNormalization: _export_batch_norm,
        keras.layers.ReLU: _export_relu,
        keras.layers.Activation: _export_relu,
        keras.layers.MaxPooling2D: _export_max_pool,
        keras.layers.Add: _export_add,
        keras.layers.UpSampling2D: _export_upsampling,
    }
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        # Exact type, not isinstance: a subclass (a custom Conv2D) may compute something else.
        exporter = exporters.get(type(layer))
        if exporter is None:
            raise OnnxExportError(
                f"cannot export layer {layer.name!r} of type {type(layer).__name__} to ONNX; export_onnx "
                f"handles {', '.join(SUPPORTED_LAYERS)}; use runtime='keras' for this model"
            )
        source = _layer_input(layer)
        exporter(graph, layer, source, layer.output)

    graph.node("Transpose", [graph.materialized(model_output)], "heatmaps", perm=[0, 2, 3, 1])
    if subpixel:
        _subpixel_deconvolutions(graph)

    onnx_graph = helper.make_graph(
        graph.nodes,
        model.name,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", height, width, 3])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["N", out_h, out_w, joints])],
        initializer=[
            numpy_helper.from_array(array.astype(np.int64 if array.dtype == np.int64 else np.float32), name)
            for name, array in graph.arrays.items()
        ],
    )
    proto = helper.make_model(
        onnx_graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="app.onnx_export",
        producer_version=EXPORTER_VERSION, ir_version=ONNX_IR_VERSION,
    )
    helper.set_model_props(proto, dict(metadata or {}))
    onnx.checker.check_model(proto)
    return proto
