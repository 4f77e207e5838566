"""Errors a user can meet, each with one clear line and its own exit status.

`run_demo.py` and the `python -m app.*` commands run their body through `run_command`, which
prints a `PoseError` as one line and returns its `exit_code`; `--debug` shows the traceback instead.
"""

import os
import signal
import sys
from typing import Callable


class PoseError(Exception):
    """Base class: `str(error)` is the one line shown to the user."""

    exit_code = 1


class MissingWeightsError(PoseError):
    """No trained weights where they were looked for (a first run before any download). Not 2,
    which argparse gives a bad command line."""

    exit_code = 10


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


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: stop as Ctrl-C does (every `finally` closes its outputs), and
    exit with 128 + the signal's number, as shells report a program killed by it (143, 129)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_signals() -> tuple[int, ...]:
    """SIGTERM and SIGHUP where the platform has them: Windows has no SIGHUP (nor a terminal's hang-up)."""
    return tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def _raise_stopped(signum, frame) -> None:
    # A second SIGTERM (systemd sends one to every process of the group) must not cut the closing
    # of the outputs short: from now on both are ignored.
    for other in stop_signals():
        signal.signal(other, signal.SIG_IGN)
    raise Stopped(signum)


def stop_on_signals() -> None:
    """SIGTERM (service managers, containers, `kill`) and SIGHUP (the terminal closed) raise
    Stopped in the main thread, as SIGINT raises KeyboardInterrupt. A signal the parent set to be
    ignored (`nohup` ignores SIGHUP) stays ignored. Call from the main thread."""
    for signum in stop_signals():
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise_stopped)


def interrupt_exit_code(error: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 128 + N for signal N (Stopped)."""
    return 128 + error.signum if isinstance(error, Stopped) else EXIT_INTERRUPTED


def run_command(body: Callable[[], int], debug: bool, *, hard_exit_on_interrupt: bool = False) -> int:
    """body() -> its exit status; a PoseError -> `error: <line>` on stderr and its exit_code.

    Ctrl-C -> "interrupted" and EXIT_INTERRUPTED; SIGTERM/SIGHUP (after stop_on_signals) ->
    "stopped by SIGTERM" and 143/129. debug: re-raise either, so the traceback shows.
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
    except KeyboardInterrupt as interrupt:
        if debug:
            raise
        what = f"stopped by {interrupt.args[0]}" if isinstance(interrupt, Stopped) else "interrupted"
        code = interrupt_exit_code(interrupt)
        try:  # after SIGHUP the terminal may be gone: the exit status must not depend on stderr
            print(f"{what}: outputs closed" if hard_exit_on_interrupt else what, file=sys.stderr)
            if hard_exit_on_interrupt:
                sys.stdout.flush()
                sys.stderr.flush()
        except OSError:
            pass
        if hard_exit_on_interrupt:
            os._exit(code)
        return code
