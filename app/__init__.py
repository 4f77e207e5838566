"""Top-down pose pipeline stages: detector, crops, model runtime, decode, smoothing, drawing.

Each module does one thing and is testable on its own; `app.pipeline` composes them.
"""

import sys

# torch's CUDA wheels pull in triton, whose bundled LLVM clashes with the one TensorFlow has
# already loaded: `import tensorflow` then anything that imports triton (torchvision does, through
# torch._dynamo) segfaults the process. Nothing here compiles GPU kernels with triton, so keep it
# out of every process that imports `app`; torch treats it as not installed.
sys.modules.setdefault("triton", None)
