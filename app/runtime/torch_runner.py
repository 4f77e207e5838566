"""TorchRunner: the pose model as one frozen torch graph, a CUDA graph per batch bucket on a GPU.

    runner = TorchRunner(model, device="cpu")            # any functional Keras model of the project
    heatmaps = runner(batch)   # (N, H, W, 3) float32 normalised RGB, or uint8 BGR crops -> (N, h, w, K) float32

Why the model is rebuilt in plain torch instead of running Keras on its torch backend:
- Keras' torch backend runs ~200 `Layer.__call__` per forward (~141,000 Python function calls,
  39-46 ms of host time per call whatever the device) and re-lays-out every kernel on every call.
- The Keras backend is chosen once per process before Keras is imported (app.device); on a CPU it is
  TensorFlow, whose variables torch cannot use. Reading the weights with keras.ops.convert_to_numpy
  works under every backend, so the runner does not depend on which backend Keras runs: the same
  code, and the same numbers, under TensorFlow, torch or JAX.
- Tracing the Keras model itself under the torch backend (+ torch.jit.freeze) also works, but only
  under that backend, and measured slower here (docs/benchmarks.md, "Torch runner (issue 17)").
So `build_torch_module` walks the functional model's layers in graph order (as app.onnx_export does),
with the weights laid out once, NCHW, BatchNorm folded into the convolution before it (in float64).

Then, once per runner:
- CPU: torch.jit.trace + torch.jit.freeze: one TorchScript graph call per batch, no Python per layer.
- CUDA: a CUDA graph captured per batch bucket (1, 2, 4, 8, 16) on first use, fed from preallocated
  device buffers: a call is one upload, one replay, one download. A batch is padded to its bucket; a
  batch above the largest bucket is split (plan_buckets, a pure function tested on the CPU). Where a
  capture fails (a driver or cuDNN that refuses it), that bucket calls the module on the same
  buffers instead: logged once, the start-up line says "no CUDA graphs", the run goes on.
- MPS: the module as it is (no graphs there).
Activations stay channels_last inside (the NHWC input permuted to NCHW is already that layout, and
oneDNN's and cuDNN's fast convolutions use it), so the only transposes are the free ones at the ends.

Precision: "float32"; "float16" on CUDA (weights and activations half, heatmaps returned float32);
"bfloat16" on a CPU (oneDNN's bf16 kernels, fast where the CPU has AVX512_BF16 or AMX). float16 on a
CPU is not offered: the CPU kernels for it are emulated and slower than float32, so the runner falls
back to float32 and says so in `.note` (as ONNX Runtime on the CPU stays float32). The tests run the
float16 module on the CPU anyway (torch computes it there, slowly) to check its tolerance.

Input: float32 (N, H, W, 3) RGB normalised with the ImageNet statistics (app.crop.normalize), or uint8
(N, H, W, 3) BGR crops as app.crop.warp_crops gives them, normalised inside the graph exactly as
app.crop.normalize does: on a GPU a quarter of the bytes go up and the arithmetic runs there.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass

import keras
import numpy as np

from app.errors import DeviceError
from app.onnx_export import conv_kernel_oihw, model_io_shape, same_pads, transposed_same_crop
from app.runtime.common import check_batch

log = logging.getLogger(__name__)

BUCKETS = (1, 2, 4, 8, 16)
PRECISIONS = ("float32", "float16", "bfloat16")

# ImageNet statistics, RGB, for pixels scaled to 0..1 (the same as app.crop.IMAGENET_MEAN / _STD).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class TorchUnavailableError(DeviceError):
    """`--runtime torch` where torch cannot be imported."""


class OutOfDeviceMemoryError(DeviceError):
    """The accelerator ran out of memory running the pose model."""


def import_torch():
    """torch, or TorchUnavailableError with one line saying what to do."""
    try:
        import torch
    except Exception as error:  # ImportError, or OSError from a broken CUDA library
        reason = (str(error).splitlines() or [""])[0]
        raise TorchUnavailableError(
            f"--runtime torch: torch cannot be loaded ({type(error).__name__}: {reason}); "
            "reinstall it with `pip install -r requirements.txt`, or use --runtime onnx") from None
    return torch


# --- buckets: pure functions, tested on the CPU --------------------------------------------------------

def bucket_for(count: int, buckets: tuple[int, ...] = BUCKETS) -> int:
    """The smallest bucket that holds `count` people (1 <= count <= max(buckets))."""
    for bucket in buckets:
        if count <= bucket:
            return bucket
    raise ValueError(f"{count} people do not fit the largest bucket {max(buckets)}; split with plan_buckets")


def plan_buckets(count: int, buckets: tuple[int, ...] = BUCKETS) -> list[tuple[int, int, int]]:
    """How a batch of `count` people runs: [(start, stop, bucket)], each slice padded to its bucket.

    Full largest buckets first, then the rest in the smallest bucket that holds it:
    0 -> [], 3 -> [(0, 3, 4)], 20 -> [(0, 16, 16), (16, 20, 4)] with the default buckets.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    largest = max(buckets)
    plan = []
    for start in range(0, count, largest):
        stop = min(start + largest, count)
        plan.append((start, stop, bucket_for(stop - start, buckets)))
    return plan


# --- Keras -> torch ------------------------------------------------------------------------------------

class TorchBuildError(ValueError):
    """The Keras model holds a layer build_torch_module cannot translate exactly."""


SUPPORTED_LAYERS = (
    "InputLayer", "ZeroPadding2D", "Conv2D", "DepthwiseConv2D", "Conv2DTranspose", "BatchNormalization",
    "ReLU (max_value allowed: ReLU6)", "Activation (relu, linear, sigmoid)", "MaxPooling2D", "Add",
    "Concatenate (channels)", "UpSampling2D (nearest)",
)


@dataclass
class _Step:
    """One operation of the rebuilt graph: op on the values `inputs` -> value `output`.

    params: names of the module's buffers it reads; attrs: everything else it needs.
    """

    op: str
    inputs: list[int]
    output: int
    params: tuple[str, ...] = ()
    attrs: dict | None = None


def _array(variable) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float64)


def _activation_name(layer) -> str:
    activation = getattr(layer, "activation", keras.activations.linear)
    for name in ("linear", "relu", "sigmoid"):
        if activation is getattr(keras.activations, name):
            return name
    raise TorchBuildError(f"layer {layer.name!r} has activation {getattr(activation, '__name__', activation)!r}; "
                          "the torch runner handles linear, relu and sigmoid")


def _channels_last(layer) -> None:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise TorchBuildError(f"layer {layer.name!r} is {layer.data_format}; the torch runner expects channels_last")


class _Builder:
    """Walks a functional Keras model's layers into _Steps and float64 numpy parameters."""

    def __init__(self, model: keras.Model):
        self.steps: list[_Step] = []
        self.params: dict[str, np.ndarray] = {}
        self.ids: dict[int, int] = {}  # id(Keras tensor) -> value number
        self.pads: dict[int, tuple[int, int, int, int]] = {}  # value -> pending zero pads (top, left, bottom, right)
        self.conv_of: dict[int, _Step] = {}  # value -> the conv step that produced it (BatchNorm folds into it)
        self.uses: dict[int, int] = {}  # id(Keras tensor) -> consumers
        self.model = model
        self.count = 0

    # values ----------------------------------------------------------------------------------------
    def value(self, tensor) -> int:
        return self.ids[id(tensor)]

    def fresh(self) -> int:
        """A new value number (for a Keras tensor or an intermediate step's output)."""
        self.count += 1
        return self.count

    def new_value(self, tensor) -> int:
        self.ids[id(tensor)] = number = self.fresh()
        return number

    def materialized(self, tensor) -> int:
        """The value of `tensor` with any pending zero padding applied (an explicit pad step)."""
        value = self.value(tensor)
        pads = self.pads.get(value, (0, 0, 0, 0))
        if pads == (0, 0, 0, 0):
            return value
        padded = self.fresh()
        top, left, bottom, right = pads
        self.steps.append(_Step("pad", [value], padded, attrs={"pad": (left, right, top, bottom), "fill": 0.0}))
        self.pads[value] = (0, 0, 0, 0)
        # Later readers of this tensor get the padded value.
        self.ids[id(tensor)] = padded
        return padded

    def param(self, name: str, array: np.ndarray) -> str:
        key = name.replace(".", "_").replace("/", "_")
        self.params[key] = array
        return key

    # layers ----------------------------------------------------------------------------------------
    def build(self) -> tuple[list[_Step], dict[str, np.ndarray], int, int]:
        model = self.model
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            for tensor in keras.tree.flatten(self._input(layer)):
                self.uses[id(tensor)] = self.uses.get(id(tensor), 0) + 1
        for tensor in model.outputs:
            self.uses[id(tensor)] = self.uses.get(id(tensor), 0) + 1
        (model_input,), (model_output,) = model.inputs, model.outputs
        first = self.new_value(model_input)
        handlers = {
            keras.layers.ZeroPadding2D: self.zero_padding,
            keras.layers.Conv2DTranspose: self.conv_transpose,
            keras.layers.Conv2D: self.conv,
            keras.layers.DepthwiseConv2D: self.conv,
            keras.layers.BatchNormalization: self.batch_norm,
            keras.layers.ReLU: self.relu,
            keras.layers.Activation: self.activation,
            keras.layers.MaxPooling2D: self.max_pool,
            keras.layers.Add: self.add,
            keras.layers.Concatenate: self.concatenate,
            keras.layers.UpSampling2D: self.upsampling,
        }
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            # Exact type, not isinstance: a subclass (a custom Conv2D) may compute something else.
            handler = handlers.get(type(layer))
            if handler is None:
                raise TorchBuildError(
                    f"the torch runner cannot rebuild layer {layer.name!r} of type {type(layer).__name__}; "
                    f"it handles {', '.join(SUPPORTED_LAYERS)}; use --runtime keras for this model")
            handler(layer, self._input(layer), layer.output)
        last = self.materialized(model_output)
        return self.steps, self.params, first, last

    @staticmethod
    def _input(layer):
        try:
            return layer.input
        except (ValueError, AttributeError) as error:
            raise TorchBuildError(f"layer {layer.name!r} is used more than once ({error}); "
                                  "the torch runner needs each layer called once") from None

    def zero_padding(self, layer, source, output) -> None:
        _channels_last(layer)
        (top, bottom), (left, right) = layer.padding
        value = self.value(source)
        old = self.pads.get(value, (0, 0, 0, 0))
        out = self.new_value(output)
        # Pending: a following convolution takes symmetric pads as its own padding (no copy).
        self.steps.append(_Step("identity", [value], out))
        self.pads[out] = (old[0] + top, old[1] + left, old[2] + bottom, old[3] + right)

    def conv(self, layer, source, output) -> None:
        _channels_last(layer)
        value = self.value(source)
        _, height, width, _ = source.shape
        (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.strides, layer.dilation_rate
        top, left, bottom, right = self.pads.get(value, (0, 0, 0, 0))
        if layer.padding == "same":
            before_h, after_h = same_pads(height, kh, sh, dh)
            before_w, after_w = same_pads(width, kw, sw, dw)
            top, bottom, left, right = top + before_h, bottom + after_h, left + before_w, right + after_w
        elif layer.padding != "valid":
            raise TorchBuildError(f"layer {layer.name!r} has padding {layer.padding!r}; the torch runner handles "
                                  "valid and same")
        if (top, left) != (bottom, right):
            # torch's conv pads symmetrically: an asymmetric pad goes first, as its own step.
            padded = self.fresh()
            self.steps.append(_Step("pad", [value], padded, attrs={"pad": (left, right, top, bottom), "fill": 0.0}))
            value, top, left = padded, 0, 0
        kernel, groups = conv_kernel_oihw(layer, _array(layer.kernel))
        weight = self.param(f"{layer.name}_weight", kernel)
        bias = self.param(f"{layer.name}_bias", _array(layer.bias) if layer.use_bias
                          else np.zeros(kernel.shape[0]))
        step = _Step("conv", [value], -1, (weight, bias),
                     {"stride": (sh, sw), "padding": (top, left), "dilation": (dh, dw), "groups": groups})
        self._finish(layer, step, output)

    def conv_transpose(self, layer, source, output) -> None:
        _channels_last(layer)
        (kh, kw), (sh, sw) = layer.kernel_size, layer.strides
        if tuple(layer.dilation_rate) != (1, 1) or layer.output_padding is not None:
            raise TorchBuildError(f"layer {layer.name!r}: the torch runner handles Conv2DTranspose without dilation "
                                  "or output_padding")
        if kh < sh or kw < sw:
            raise TorchBuildError(f"layer {layer.name!r}: a kernel smaller than its stride is not handled")
        if layer.padding == "same":
            # Keras "same": the full output ((in - 1) * stride + kernel) cropped by kernel - stride,
            # the smaller half at the start (as app.onnx_export); torch crops `padding` on both sides.
            crop = transposed_same_crop((kh, kw), (sh, sw))
        elif layer.padding == "valid":
            crop = (0, 0, 0, 0)
        else:
            raise TorchBuildError(f"layer {layer.name!r} has padding {layer.padding!r}; the torch runner handles "
                                  "valid and same")
        value = self.materialized(source)
        kernel = _array(layer.kernel)  # (kh, kw, out, in)
        weight = self.param(f"{layer.name}_weight", kernel.transpose(3, 2, 0, 1))  # -> (in, out, kh, kw)
        bias = self.param(f"{layer.name}_bias", _array(layer.bias) if layer.use_bias else np.zeros(kernel.shape[2]))
        top, left, bottom, right = crop
        symmetric = (top, left) == (bottom, right)
        step = _Step("conv_transpose", [value], -1, (weight, bias),
                     {"stride": (sh, sw), "padding": (top, left) if symmetric else (0, 0),
                      "crop": None if symmetric else crop})
        self._finish(layer, step, output)

    def _finish(self, layer, step: _Step, output) -> None:
        activation = _activation_name(layer)
        self.steps.append(step)
        if activation == "linear":
            step.output = self.new_value(output)
            self.conv_of[step.output] = step
            return
        step.output = self.fresh()
        self.steps.append(_Step(activation, [step.output], self.new_value(output)))

    def batch_norm(self, layer, source, output) -> None:
        if layer.axis not in (-1, 3, [-1], [3]):
            raise TorchBuildError(f"layer {layer.name!r} normalises axis {layer.axis}; the torch runner expects "
                                  "the channels")
        channels = source.shape[-1]
        gamma = _array(layer.gamma) if layer.scale else np.ones(channels)
        beta = _array(layer.beta) if layer.center else np.zeros(channels)
        scale = gamma / np.sqrt(_array(layer.moving_variance) + layer.epsilon)
        shift = beta - _array(layer.moving_mean) * scale
        value = self.value(source)
        conv = self.conv_of.get(value)
        if conv is not None and self.uses.get(id(source)) == 1 and self.pads.get(value, (0,) * 4) == (0,) * 4:
            # Inference BatchNorm is a per-channel affine map: it folds into the convolution before
            # it (W' = W * scale per output channel, b' = b * scale + shift), in float64 so the fold
            # adds no rounding of its own. One pass over the activations less per layer.
            weight, bias = conv.params
            axis = 0 if conv.op == "conv" else 1
            shape = [1, 1, 1, 1]
            shape[axis] = channels
            self.params[weight] = self.params[weight] * scale.reshape(shape)
            self.params[bias] = self.params[bias] * scale + shift
            self.ids[id(output)] = value
            return
        source_value = self.materialized(source)
        names = (self.param(f"{layer.name}_scale", scale), self.param(f"{layer.name}_shift", shift))
        self.steps.append(_Step("affine", [source_value], self.new_value(output), names))

    def relu(self, layer, source, output) -> None:
        if layer.negative_slope or layer.threshold:
            raise TorchBuildError(f"layer {layer.name!r} is a ReLU with negative_slope or threshold; the torch "
                                  "runner handles max(x, 0), capped by max_value")
        value = self.materialized(source)
        if layer.max_value is None:
            self.steps.append(_Step("relu", [value], self.new_value(output)))
        else:
            self.steps.append(_Step("clamp", [value], self.new_value(output), attrs={"max": float(layer.max_value)}))

    def activation(self, layer, source, output) -> None:
        name = _activation_name(layer)
        if name == "linear":
            self.ids[id(output)] = self.value(source)
            return
        self.steps.append(_Step(name, [self.materialized(source)], self.new_value(output)))

    def max_pool(self, layer, source, output) -> None:
        _channels_last(layer)
        value = self.materialized(source)  # explicit zero pads: ZeroPadding2D's zeros, exactly
        _, height, width, _ = source.shape
        (kh, kw), (sh, sw) = layer.pool_size, layer.strides
        pad = (0, 0, 0, 0)
        if layer.padding == "same":
            # Keras "same" pooling never picks a padded position: pad with -inf.
            top, bottom = same_pads(height, kh, sh, 1)
            left, right = same_pads(width, kw, sw, 1)
            pad = (left, right, top, bottom)
        elif layer.padding != "valid":
            raise TorchBuildError(f"layer {layer.name!r} has padding {layer.padding!r}")
        if pad != (0, 0, 0, 0):
            padded = self.fresh()
            self.steps.append(_Step("pad", [value], padded, attrs={"pad": pad, "fill": -math.inf}))
            value = padded
        self.steps.append(_Step("max_pool", [value], self.new_value(output),
                                attrs={"kernel": (kh, kw), "stride": (sh, sw)}))

    def add(self, layer, sources, output) -> None:
        values = [self.materialized(tensor) for tensor in sources]
        self.steps.append(_Step("add", values, self.new_value(output)))

    def concatenate(self, layer, sources, output) -> None:
        rank = len(output.shape)
        if layer.axis not in (-1, rank - 1):
            raise TorchBuildError(f"layer {layer.name!r} concatenates axis {layer.axis}; the torch runner "
                                  "handles the channels")
        values = [self.materialized(tensor) for tensor in sources]
        self.steps.append(_Step("concat", values, self.new_value(output)))

    def upsampling(self, layer, source, output) -> None:
        _channels_last(layer)
        if layer.interpolation != "nearest":
            raise TorchBuildError(f"layer {layer.name!r} upsamples {layer.interpolation!r}; the torch runner "
                                  "handles nearest")
        self.steps.append(_Step("upsample", [self.materialized(source)], self.new_value(output),
                                attrs={"size": tuple(int(s) for s in layer.size)}))


def build_torch_module(model: keras.Model):
    """A torch.nn.Module computing `model`: (N, H, W, 3) NHWC float32 -> (N, h, w, K) NHWC float32.

    Also takes uint8 (N, H, W, 3) BGR crops and normalises them as app.crop.normalize. Parameters
    are float32 buffers (`.to(device)`, `.half()` move and cast them). Layers other than
    SUPPORTED_LAYERS raise TorchBuildError naming the layer.
    """
    torch = import_torch()
    if not getattr(model, "inputs", None):
        raise TorchBuildError(f"{model.name} has no symbolic inputs: the torch runner needs a functional Keras model")
    model_io_shape(model)  # one input, one output, fixed sizes
    steps, params, first, last = _Builder(model).build()
    return _make_module(torch, steps, params, first, last)


def _make_module(torch, steps, params, first, last):
    import torch.nn.functional as F

    class KerasGraph(torch.nn.Module):
        """The rebuilt graph: forward walks the steps (traced or captured once, so per call no Python
        runs per layer)."""

        def __init__(self):
            super().__init__()
            for name, array in params.items():
                self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)))
            # uint8 BGR -> normalised RGB, as app.crop.normalize: (x / 255 - mean) / std = x * a + b.
            std = np.array(_IMAGENET_STD, np.float64)
            a = (1 / (255 * std))[::-1].copy()  # in BGR order: the flip comes after
            b = (-np.array(_IMAGENET_MEAN) / std)
            self.register_buffer("pixel_scale", torch.tensor(a, dtype=torch.float32).reshape(1, 1, 1, 3))
            self.register_buffer("pixel_shift", torch.tensor(b, dtype=torch.float32).reshape(1, 1, 1, 3))

        def forward(self, x):
            dtype = self.pixel_scale.dtype
            if x.dtype == torch.uint8:
                x = (x.to(dtype) * self.pixel_scale).flip(-1) + self.pixel_shift
            else:
                x = x.to(dtype)
            values = {first: x.permute(0, 3, 1, 2)}  # NHWC memory seen as NCHW: channels_last, no copy
            for step in steps:
                args = [values[i] for i in step.inputs]
                p = [getattr(self, name) for name in step.params]
                a = step.attrs or {}
                op = step.op
                if op == "conv":
                    y = F.conv2d(args[0], p[0], p[1], a["stride"], a["padding"], a["dilation"], a["groups"])
                elif op == "conv_transpose":
                    y = F.conv_transpose2d(args[0], p[0], p[1], a["stride"], a["padding"])
                    if a["crop"] is not None:
                        top, left, bottom, right = a["crop"]
                        y = y[:, :, top:y.shape[2] - bottom, left:y.shape[3] - right]
                elif op == "identity":
                    y = args[0]
                elif op == "pad":
                    y = F.pad(args[0], a["pad"], value=a["fill"])
                elif op == "affine":
                    y = args[0] * p[0].reshape(1, -1, 1, 1) + p[1].reshape(1, -1, 1, 1)
                elif op == "relu":
                    y = torch.relu(args[0])
                elif op == "clamp":
                    y = torch.clamp(args[0], 0.0, a["max"])
                elif op == "sigmoid":
                    y = torch.sigmoid(args[0])
                elif op == "max_pool":
                    y = F.max_pool2d(args[0], a["kernel"], a["stride"])
                elif op == "add":
                    y = args[0]
                    for other in args[1:]:
                        y = y + other
                elif op == "concat":
                    y = torch.cat(args, dim=1)
                elif op == "upsample":
                    y = F.interpolate(args[0], scale_factor=a["size"], mode="nearest")
                else:
                    raise AssertionError(op)
                values[step.output] = y
            # NCHW -> NHWC; in channels_last memory this is a view, made contiguous once.
            return values[last].permute(0, 2, 3, 1).float().contiguous()

    return KerasGraph().eval()


# --- the runner ----------------------------------------------------------------------------------------

def resolve_precision(precision: str, device: str) -> tuple[str, str]:
    """(precision the runner uses, note for the user or "") for a precision asked for on a device.

    float16 on a CPU falls back to float32 (see the module docstring); bfloat16 on a GPU is not
    offered (float16 is the GPU's half precision here) and also falls back to float32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "float16" and device == "cpu":
        return "float32", "float16 is not offered on a CPU (emulated, slower than float32): running float32"
    if precision == "bfloat16" and device != "cpu":
        return "float32", f"bfloat16 is offered on a CPU only: running float32 on {device}"
    return precision, ""


class TorchRunner:
    """The pose model as one torch graph: weights laid out once here, one graph call per batch.

    model: a functional Keras model (any backend). device: "cpu", "cuda[:N]" or "mps".
    precision: "float32", "float16" (CUDA/MPS) or "bfloat16" (CPU); see resolve_precision.
    threads: torch intra-op threads on a CPU (default: torch's own, the physical cores). buckets: the batch sizes
    with their own static buffers (and CUDA graph). static_buckets: run through those buffers
    (default: on CUDA, with CUDA graphs); True on another device runs the same buffers, padding and
    splitting without graphs (how the tests check that logic on a CPU); False calls the module
    directly (on CUDA: for comparisons).
    """

    def __init__(self, model: keras.Model, device: str = "cpu", precision: str = "float32",
                 threads: int | None = None, buckets: tuple[int, ...] = BUCKETS,
                 static_buckets: bool | None = None):
        torch = import_torch()
        self._torch = torch
        self.input_size, self.heatmap_size, self.num_joints = model_io_shape(model)
        device = "cuda:0" if device == "cuda" else device
        self.device = device
        self.precision, self.note = resolve_precision(precision, device)
        # What app.pose.PoseEstimator hands over: on a GPU the uint8 crops (a quarter of float32's
        # bytes to upload), normalised on the device inside the graph; on a CPU the float32 batch
        # app.crop.normalize made, so one frozen graph serves every caller.
        self.input_dtype = "float32" if device == "cpu" else "uint8"
        self.name = f"torch-{device.split(':')[0]}"
        self.engine = f"torch {torch.__version__.split('+')[0]}"
        self.buckets = tuple(sorted(buckets))
        if device == "cpu" and threads:
            # torch's intra-op pool is one per process (the detector's too): changed only when asked.
            torch.set_num_threads(threads)
        dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[self.precision]
        # channels_last weights: the activations are channels_last already (see the module docstring).
        module = build_torch_module(model).to(device=device, dtype=dtype, memory_format=torch.channels_last)
        self.module = module
        self._graphs = None
        self._call = None
        on_cuda = device.startswith("cuda")
        with self._out_of_memory_as_error(max(self.buckets)):
            if static_buckets or (static_buckets is None and on_cuda):
                self._graphs = _StaticBuckets(torch, module, device, self.input_size, self.buckets, graphs=on_cuda)
                if on_cuda:
                    self._graphs.capture(1, np.dtype(self.input_dtype))  # the first frame's bucket, at load
                    self.engine += " (CUDA graphs)" if self._graphs.graph_failure is None else " (no CUDA graphs)"
            elif device == "cpu":
                self._call = _frozen_cpu_module(torch, module, self.input_size)
                self.engine += " (TorchScript, frozen)"
            else:
                self._call = module

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """batch (N, H, W, 3) float32 normalised RGB or uint8 BGR crops -> heatmaps (N, h, w, K) float32."""
        if not (isinstance(batch, np.ndarray) and batch.dtype == np.uint8):
            batch = check_batch(batch, self.input_size, self.name)
        elif batch.ndim != 4 or batch.shape[1:] != (*self.input_size, 3):
            raise ValueError(f"{self.name} expects a (N, {self.input_size[0]}, {self.input_size[1]}, 3) batch, "
                             f"got {batch.shape}")
        if len(batch) == 0:
            return np.zeros((0, *self.heatmap_size, self.num_joints), np.float32)
        with self._out_of_memory_as_error(len(batch)):
            if self._graphs is not None:
                return self._graphs.run(batch)
            with self._torch.inference_mode():
                source = self._torch.from_numpy(np.ascontiguousarray(batch))
                if self.device != "cpu":
                    source = source.to(self.device)
                return self._call(source).cpu().numpy()

    @contextlib.contextmanager
    def _out_of_memory_as_error(self, people: int):
        """torch.cuda.OutOfMemoryError -> OutOfDeviceMemoryError: one line naming the fix."""
        try:
            yield
        except self._torch.cuda.OutOfMemoryError:
            self._torch.cuda.empty_cache()
            raise OutOfDeviceMemoryError(
                f"{self.device} ran out of memory running the pose model on {people} people at once; "
                "follow fewer people with --max-people, or use --half") from None


def _frozen_cpu_module(torch, module, input_size: tuple[int, int]):
    """call(x) -> heatmaps through torch.jit.trace + freeze + optimize_for_inference: the weights
    become constants of one TorchScript graph (prepacked for oneDNN where that pays) and a call runs
    it in C++, with no Python per layer. One graph per input dtype (float32 now, uint8 crops on their
    first call): a trace records the branch its example took. torch marks TorchScript deprecated in
    favour of torch.compile / torch.export; torch.compile needs a C++ toolchain at run time and
    torch.export's module runs Python per node (docs/benchmarks.md), so TorchScript stays the CPU
    path while torch ships it."""
    import warnings

    graphs = {}

    def freeze(dtype):
        example = torch.zeros((1, *input_size, 3), dtype=dtype)
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
            traced = torch.jit.trace(module, example, check_trace=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
            for _ in range(2):  # the profiling executor optimises the graph on its first calls
                frozen(example)
        graphs[dtype] = frozen
        return frozen

    def call(x):
        return (graphs.get(x.dtype) or freeze(x.dtype))(x)

    freeze(torch.float32)
    return call


class _StaticBuckets:
    """Preallocated buffers per batch bucket, and on CUDA one CUDA graph per bucket over them.

    A bucket's static input, output and graph are made on its first use (capture), so a run with one
    person never pays for 16. Per call: the batch goes into a (pinned, on CUDA) host buffer, up into
    the bucket's static input (float32, or uint8 for uint8 crops), the graph replays, the heatmaps
    come down into a host buffer. The padded rows of a bucket hold zeros or an earlier batch's people:
    each person's heatmaps depend on that person alone (inference BatchNorm is folded away), so the
    padding never changes a real person's output (tests/test_torch_runner.py checks it).

    graphs=False replays the module itself instead of a captured graph: the same buffers, padding and
    splitting, on any device, which is how the tests run this logic on a CPU.
    """

    def __init__(self, torch, module, device: str, input_size: tuple[int, int], buckets: tuple[int, ...],
                 graphs: bool = True):
        self.torch, self.module, self.device, self.input_size = torch, module, device, input_size
        self.buckets, self.use_graphs = buckets, graphs
        self.captured = {}  # (bucket, input dtype) -> (replay(), static input, static output)
        self.pool = torch.cuda.graph_pool_handle() if graphs else None  # one pool: graphs replay one at a time
        pin = device.startswith("cuda")
        largest = max(buckets)
        self.host_in = {np.dtype(np.float32): torch.empty((largest, *input_size, 3), dtype=torch.float32, pin_memory=pin),
                        np.dtype(np.uint8): torch.empty((largest, *input_size, 3), dtype=torch.uint8, pin_memory=pin)}
        with torch.inference_mode():
            heatmaps = module(torch.zeros((1, *input_size, 3), device=device)).shape[1:]
        self.host_out = torch.empty((largest, *heatmaps), dtype=torch.float32, pin_memory=pin)
        self.stream = torch.cuda.Stream(device) if graphs else None
        self.graph_failure: str | None = None  # why a capture failed, if one did (capture)

    def capture(self, bucket: int, dtype: np.dtype):
        torch = self.torch
        static_in = torch.zeros((bucket, *self.input_size, 3), dtype=self.host_in[dtype].dtype, device=self.device)
        if not self.use_graphs:
            return self._eager_bucket(bucket, dtype, static_in)
        benchmark = torch.backends.cudnn.benchmark
        # cuDNN tries its convolution algorithms for these shapes once, here, and the graph keeps the
        # fastest. Restored after, so the detector sharing the process keeps torch's default.
        torch.backends.cudnn.benchmark = True
        try:
            with torch.inference_mode():
                self.stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(self.stream):
                    for _ in range(3):  # warm-up on a side stream before capture, as torch's docs ask
                        self.module(static_in)
                torch.cuda.current_stream(self.device).wait_stream(self.stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=self.pool):
                    static_out = self.module(static_in)
        except torch.cuda.OutOfMemoryError:
            raise  # TorchRunner turns it into the one line that names the fix
        except RuntimeError as error:
            # A driver, cuDNN or torch build that cannot capture this graph: the same module, called
            # on the same buffers, gives the same heatmaps at a few ms more host time per call.
            # Said once; a run that stops here helps no one.
            if self.graph_failure is None:
                self.graph_failure = str(error).splitlines()[0] if str(error) else type(error).__name__
                log.warning("CUDA graph capture failed (%s); the pose model runs without CUDA graphs",
                            self.graph_failure)
            return self._eager_bucket(bucket, dtype, static_in)
        finally:
            torch.backends.cudnn.benchmark = benchmark
        self.captured[bucket, dtype] = (graph.replay, static_in, static_out)
        return self.captured[bucket, dtype]

    def _eager_bucket(self, bucket: int, dtype: np.dtype, static_in):
        """A bucket whose replay calls the module itself on its static input."""
        with self.torch.inference_mode():
            static_out = self.module(static_in)

        def replay():
            static_out.copy_(self.module(static_in))

        self.captured[bucket, dtype] = (replay, static_in, static_out)
        return self.captured[bucket, dtype]

    def launch(self, people: np.ndarray, bucket: int):
        """Queue one bucket: the people (n <= bucket) up, the graph, the heatmaps down into the host
        output buffer. Host work only on CUDA (nothing waits for the GPU); returns a CUDA event that
        marks the heatmaps' arrival, or None where the work is already done (no graphs).
        benchmarks/gpu_check.py times this as the host cost of a call."""
        torch = self.torch
        replay, static_in, static_out = self.captured.get((bucket, people.dtype)) or self.capture(bucket, people.dtype)
        count = len(people)
        host = self.host_in[people.dtype][:count]
        host.numpy()[:] = people
        static_in[:count].copy_(host, non_blocking=True)
        replay()
        self.host_out[:count].copy_(static_out[:count], non_blocking=True)
        if not self.use_graphs:
            return None
        # (A bucket that fell back to the module (capture) queues its work on the device as well.)
        done = torch.cuda.Event()
        done.record()
        return done

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) -> (N, h, w, K) float32, bucket by bucket (plan_buckets)."""
        out = np.empty((len(batch), *self.host_out.shape[1:]), np.float32)
        with self.torch.inference_mode():
            for start, stop, bucket in plan_buckets(len(batch), self.buckets):
                done = self.launch(batch[start:stop], bucket)
                if done is not None:
                    done.synchronize()  # the host buffers serve every bucket: wait before the next
                out[start:stop] = self.host_out[:stop - start].numpy()
        return out
