"""Errors a user can meet, each with one clear line and its own exit status.

`run_demo.py` and the `python -m app.*` commands run their body through `run_command`, which
prints a `PoseError` as one line and returns its `exit_code`; `--debug` shows the traceback instead.
"""

import os
import sys
from typing import Callable


class PoseError(Exception):
    """Base class: `str(error)` is the one line shown to the user."""

    exit_code = 1


class MissingWeightsError(PoseError):
    """No trained weights where they were looked for."""

    exit_code = 2


class SourceError(PoseError):
    """The input (file, folder, image) does not exist or cannot be decoded."""

    exit_code = 3


class CameraError(PoseError):
    """No camera at that index, the camera is busy, or it stopped delivering frames."""

    exit_code = 4


class WeightsError(PoseError):
    """A weights file or checkpoint that is truncated, unsafe or for another model."""

    exit_code = 5


class DetectorError(PoseError):
    """The person detector file is missing or cannot be read by Ultralytics."""

    exit_code = 6


class OutputError(PoseError):
    """An output path that cannot be written, or exists without --overwrite."""

    exit_code = 7


class DownloadError(PoseError):
    """A download failed, was cut short, or did not match its checksum."""

    exit_code = 8


class DeviceError(PoseError):
    """A device was asked for that this machine or this Keras backend cannot use."""

    exit_code = 9


EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT.


def run_command(body: Callable[[], int], debug: bool, *, hard_exit_on_interrupt: bool = False) -> int:
    """body() -> its exit status; a PoseError -> `error: <line>` on stderr and its exit_code.

    Ctrl-C -> "interrupted" and EXIT_INTERRUPTED. debug: re-raise either, so the traceback shows.
    hard_exit_on_interrupt: leave through os._exit once body has unwound (its finally blocks have
    closed the outputs); the interpreter's own teardown of TensorFlow, torch and ONNX Runtime takes
    over a second, and Ctrl-C means now.
    """
    try:
        return body()
    except PoseError as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted: outputs closed" if hard_exit_on_interrupt else "interrupted", file=sys.stderr)
        if hard_exit_on_interrupt:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
