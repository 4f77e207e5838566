"""Errors a user can meet, each with one clear line and its own exit status.

`run_demo.py` and the `python -m app.*` commands catch `PoseError`, print its message on one
line and exit with its `exit_code`; `--debug` shows the traceback instead.
"""


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


EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT.
