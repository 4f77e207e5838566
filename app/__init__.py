"""Top-down pose pipeline stages: detector, crops, model runtime, decode, smoothing, drawing.

Each module does one thing and is testable on its own; `app.pipeline` composes them.
"""

import os
import sys

# torch's CUDA wheels pull in triton, whose bundled LLVM clashes with the one TensorFlow has
# already loaded: `import tensorflow` then anything that imports triton (torchvision does, through
# torch._dynamo) segfaults the process. Nothing here compiles GPU kernels with triton, so keep it
# out of every process that imports `app`; torch treats it as not installed.
sys.modules.setdefault("triton", None)

# OpenCV's worker threads spin for a while after each parallel call (a warp, a blur), waiting for
# the next; the hot path makes a few small calls a frame, so they spin most of the time: 0.8 ms of
# CPU a frame with one person and 0.5 with five (2-core AVX2 EPYC, benchmarks/host_bench.py), CPU the
# pose model, the detector and the video writer need, for no gain in wall time (the same within
# noise). 0 makes them sleep at once. A user's own value is kept. OpenCV reads it when cv2 is
# imported, so entry points import `app` before anything that imports cv2.
os.environ.setdefault("OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER", "0")
