"""What every runner shares: the machine's cores, where Keras puts tensors, the batch check."""

import os

import numpy as np

from app.device import backend_sees_gpu


def physical_cores() -> int:
    """Physical cores this process may run on: the default intra-op thread count.

    Hyper-threads share one core's vector units, so a second thread per core only adds contention
    to convolution kernels. psutil counts the host's cores; a container or taskset may allow fewer,
    so the CPU affinity caps it.
    """
    import psutil  # installed with Ultralytics, which the product needs anyway

    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(psutil.cpu_count(logical=False) or allowed, allowed))


def keras_device() -> str:
    """Where the active Keras backend puts new tensors: "cpu", "cuda:N" or "mps".

    Under torch that is KERAS_TORCH_DEVICE when set before Keras was imported (app.device sets it),
    else Keras' own pick; under TensorFlow and JAX their first GPU when they see one. Imports Keras
    (and its backend) when nothing has yet: the CPU runtimes on a cached graph never ask.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        return _torch_device_name(keras.ops.zeros((1,)).device)  # asks Keras itself, not torch's defaults
    return "cuda:0" if backend_sees_gpu(backend) else "cpu"


def _torch_device_name(device) -> str:
    """torch.device -> "cpu", "cuda:N" or "mps"."""
    return f"cuda:{device.index or 0}" if device.type == "cuda" else device.type


def gpu_visible() -> bool:
    """Whether the active Keras backend (tensorflow, jax or torch) runs on a GPU."""
    return keras_device() != "cpu"


def check_batch(batch: np.ndarray, input_size: tuple[int, int], name: str) -> np.ndarray:
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if batch.ndim != 4 or batch.shape[1:] != (*input_size, 3):
        raise ValueError(f"{name} expects a (N, {input_size[0]}, {input_size[1]}, 3) batch, got {batch.shape}")
    return batch
