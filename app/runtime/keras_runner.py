"""KerasRunner: the Keras model through its compiled predict function, on its backend's device."""

import keras
import numpy as np

from app.onnx_export import model_io_shape
from app.runtime.common import _torch_device_name, check_batch, keras_device


class KerasRunner:
    """The Keras model through its compiled predict function, on whatever device its backend uses.

    `predict_on_batch` traces the model once per input signature and reuses the compiled function
    (tf.function / jax.jit); calling `model(x)` instead runs layer by layer, several times slower.
    Under torch it runs under no_grad on the device Keras' torch backend uses (KERAS_TORCH_DEVICE,
    set by app.device): one host-to-device copy of the whole batch in, one copy of the heatmaps out.

    half: run a float16 copy of the model (weights cast once here, activations float16 on the
    device); the heatmaps come back as float32. precision: "float32", "float16" (as half) or
    "bfloat16" (the same copy in bfloat16); given, it wins over half. `.precision` says which.
    """

    def __init__(self, model: keras.Model, half: bool = False, precision: str | None = None):
        precision = precision or ("float16" if half else "float32")
        if precision not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"precision must be float32, float16 or bfloat16, got {precision!r}")
        self.model = model if precision == "float32" else half_precision(model, precision)
        self.input_size, self.heatmap_size, self.num_joints = model_io_shape(model)
        self.name = f"keras-{keras.backend.backend()}"
        weights = self.model.weights
        if keras.backend.backend() == "torch" and weights:
            self.device = _torch_device_name(weights[0].value.device)  # where this model's weights are
        else:
            self.device = keras_device()
        self.precision = precision
        self.engine = f"Keras {keras.__version__} ({keras.backend.backend()} backend)"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """batch (N, H, W, 3) float32 normalised RGB -> heatmaps (N, h, w, K) float32."""
        batch = check_batch(batch, self.input_size, self.name)
        if len(batch) == 0:
            return np.zeros((0, *self.heatmap_size, self.num_joints), np.float32)
        return np.asarray(self.model.predict_on_batch(batch), dtype=np.float32)


def half_precision(model: keras.Model, dtype: str = "float16") -> keras.Model:
    """A float16 (or `dtype`: "bfloat16") copy of a functional Keras model: every layer rebuilt under the "float16" dtype
    policy (variables and arithmetic float16; BatchNormalization still normalises in float32, as
    Keras does for half inputs), the weights cast from the original. The input is cast to float16
    by the first layer, on the device."""

    def as_float16(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        config["dtype"] = dtype
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=as_float16)
    copy.set_weights(model.get_weights())
    return copy
