"""Quiet start-up: what TensorFlow, absl and LiteRT print while they load is not for our users.

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")   # before anything imports TensorFlow
    with native_noise_filtered():
        import keras ...

Used by run_demo.py, `python -m app.weights` and `python -m app.evaluate`.
"""

import contextlib
import os
import re
import sys
import threading

# What TensorFlow, absl and LiteRT print straight to file descriptor 2 while they load, whatever
# TF_CPP_MIN_LOG_LEVEL says (TensorFlow 2.21 logs through absl before it reads it): information
# for their developers, not for a user of the demo. Anything else is passed through.
_NATIVE_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] "  # absl INFO and WARNING lines
    r"|E\d{4} [\d:.]+ +\d+ cuda_\S+:\d+\] failed call to cuInit"  # a machine without a GPU
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU"
)


@contextlib.contextmanager
def native_noise_filtered(enabled: bool = True):
    """While active, lines written to file descriptor 2 (by C++ libraries too, which sys.stderr
    cannot catch) go through a pipe; a thread forwards every line that is not `_NATIVE_NOISE` to
    the real stderr as it comes, so nothing else is delayed or lost."""
    # Not on Windows: there sys.stderr on a console writes with WriteConsoleW to the handle behind
    # descriptor 2, which would then be the pipe ("The handle is invalid"); the noise is shown instead.
    if not enabled or sys.platform == "win32":
        yield
        return
    sys.stderr.flush()
    real_stderr = os.dup(2)
    read_end, write_end = os.pipe()

    def forward() -> None:
        pending = b""
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not _NATIVE_NOISE.match(line.decode(errors="replace")):
                        os.write(real_stderr, line + b"\n")
        if pending:
            os.write(real_stderr, pending)

    thread = threading.Thread(target=forward, name="stderr-filter", daemon=True)
    thread.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real_stderr, 2)  # closes the pipe's last write end: the thread sees the end
        thread.join(timeout=2.0)
        os.close(real_stderr)
