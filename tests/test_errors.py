"""app.errors.run_command: the one place a PoseError becomes one line and an exit status."""

import pytest

from app.errors import EXIT_INTERRUPTED, OutputError, SourceError, run_command


def test_success_returns_the_body_status(capsys):
    assert run_command(lambda: 0, debug=False) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("error_type", [SourceError, OutputError])
def test_pose_error_is_one_line_with_its_exit_code(capsys, error_type):
    def body():
        raise error_type("cannot open clip.mp4: no such file")

    assert run_command(body, debug=False) == error_type.exit_code
    err = capsys.readouterr().err
    assert err == "error: cannot open clip.mp4: no such file\n"
    assert "Traceback" not in err


def test_debug_shows_the_traceback():
    def body():
        raise SourceError("bad")

    with pytest.raises(SourceError):
        run_command(body, debug=True)


def test_interrupt_is_exit_130(capsys):
    def body():
        raise KeyboardInterrupt

    assert run_command(body, debug=False) == EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_other_exceptions_are_not_swallowed():
    def body():
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        run_command(body, debug=False)


def test_every_exit_status_is_distinct_and_none_is_argparse_s_2():
    from app import errors

    codes = {cls.__name__: cls.exit_code for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.PoseError) and cls is not errors.PoseError}
    assert len(set(codes.values())) == len(codes) and 2 not in codes.values(), codes
    assert codes["MissingWeightsError"] == 10


# --- the command line: every value checked by argparse, every path before anything loads ---------

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import run_demo  # noqa: E402
from app.errors import DetectorError, MissingWeightsError, Stopped, interrupt_exit_code  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_sigterm_and_sighup_map_to_143_and_129(capsys):
    import signal

    for signum, code in ((signal.SIGTERM, 143), (signal.SIGHUP, 129)):
        def body():
            raise Stopped(signum)

        assert run_command(body, debug=False) == code == interrupt_exit_code(Stopped(signum))
        assert capsys.readouterr().err == f"stopped by {signal.Signals(signum).name}\n"


def test_a_platform_without_sighup_still_stops_on_sigterm(monkeypatch):
    """Windows has SIGTERM but no SIGHUP: stop_on_signals must not fail there (it ran first in
    run_demo.main, so the demo could not start at all)."""
    import signal

    from app.errors import _raise_stopped, stop_on_signals

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.delattr(signal, "SIGHUP")
    try:
        stop_on_signals()
        assert signal.getsignal(signal.SIGTERM) is _raise_stopped
        with pytest.raises(Stopped) as stopped:
            _raise_stopped(signal.SIGTERM, None)
        assert stopped.value.signum == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # a second SIGTERM cannot cut the closing short
    finally:
        signal.signal(signal.SIGTERM, before)


def test_the_start_up_noise_filter_leaves_stderr_alone_on_windows(monkeypatch):
    """The filter points descriptor 2 at a pipe. On Windows a console's sys.stderr writes with
    WriteConsoleW to the handle behind descriptor 2, which would then be the pipe: every start-up
    line would raise there, so the filter stays off on Windows."""
    from app.native_noise import native_noise_filtered

    def stderr_file():
        status = os.fstat(2)
        return status.st_dev, status.st_ino

    before = stderr_file()
    with native_noise_filtered():
        assert stderr_file() != before  # here (Linux): the pipe
    monkeypatch.setattr(sys, "platform", "win32")
    with native_noise_filtered():
        assert stderr_file() == before
    assert stderr_file() == before


@pytest.mark.parametrize("args, message", [
    (["--max-frames", "0"], "--max-frames: must be 1 or more, got 0"),
    (["--max-frames", "-5"], "--max-frames: must be 1 or more, got -5"),
    (["--detect-every", "0"], "--detect-every: must be 1 or more, got 0"),
    (["--detect-every", "-3"], "--detect-every: must be 1 or more, got -3"),
    (["--threshold", "nan"], "--threshold: must be from 0 to 1, got nan"),
    (["--threshold", "-5"], "--threshold: must be from 0 to 1, got -5"),
    (["--detector-conf", "2"], "--detector-conf: must be from 0 to 1, got 2"),
    (["--detector-size", "0"], "--detector-size: must be a multiple of 32 from 32 to 4096"),
    (["--detector-size", "33"], "--detector-size: must be a multiple of 32 from 32 to 4096"),
    (["--detector-size", "100000"], "--detector-size: must be a multiple of 32 from 32 to 4096"),
])
def test_values_out_of_range_are_usage_errors(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        run_demo.parse_args(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_record_view_without_output_warns(capsys):
    run_demo.parse_args(["--record-view"])
    assert "--record-view records into --output, which is not given; ignored" in capsys.readouterr().err


def test_help_shows_every_default_the_keys_and_the_exit_statuses():
    from app.views import KEY_LEGEND

    help_text = subprocess.run([sys.executable, str(ROOT / "run_demo.py"), "--help"], capture_output=True,
                               text=True, timeout=60).stdout
    for default in ("(default: 0)", "(default: yolov8n.pt)", "(default: 0.1)", "(default: 640)", "(default: 8)",
                    "(default: 0.3)", "(default: dark)", "(default: auto)", "(default: False)"):
        assert default in help_text, default
    assert all(key in help_text for key, _ in KEY_LEGEND)
    assert "10 no pose weights yet" in help_text and "143 SIGTERM" in help_text


def run_demo_quickly(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, YOLO_OFFLINE="1")
    env.pop("DISPLAY", None)
    env.pop("OPENCV_FFMPEG_LOGLEVEL", None)  # set in this process by a source an earlier test opened
    return subprocess.run([sys.executable, str(ROOT / "run_demo.py"), "--headless", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", ["unknown container", "missing detector", "empty detector"])
def test_bad_paths_fail_before_anything_loads(tmp_path, case):
    image = tmp_path / "a.jpg"
    image.write_bytes(b"")  # never opened: the paths are checked first
    args = ["--source", str(image)]
    if case == "unknown container":
        args += ["--output", "sub/o.txt"]
        expected, text = OutputError.exit_code, f"cannot write video {tmp_path / 'sub/o.txt'}: unknown extension .txt"
    elif case == "missing detector":
        args += ["--detector", "models/none.onnx"]
        expected, text = DetectorError.exit_code, f"detector file {tmp_path / 'models/none.onnx'} not found"
    else:
        (tmp_path / "empty.tflite").write_bytes(b"")
        args += ["--detector", "empty.tflite"]
        expected, text = DetectorError.exit_code, "detector file empty.tflite is empty"
    completed = run_demo_quickly(tmp_path, *args)
    assert completed.returncode == expected, completed.stderr
    assert text in completed.stderr and "loading the detector" not in completed.stderr
    assert completed.stderr.count("\n") == 1 and "Traceback" not in completed.stderr


def test_a_file_that_is_no_video_is_one_line_without_ffmpegs_own(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video\n")
    completed = run_demo_quickly(tmp_path, "--source", "notes.mp4")
    assert completed.returncode == SourceError.exit_code, completed.stderr
    # FFmpeg would print "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x...] moov atom not found" before it.
    assert completed.stderr == "error: cannot decode video notes.mp4: not a video OpenCV can read, or empty\n"
    debug = run_demo_quickly(tmp_path, "--source", "notes.mp4", "--debug")
    assert "moov atom not found" in debug.stderr  # --debug keeps it


def test_logged_warnings_read_like_the_demos_own_lines(tmp_path):
    """A warning from a module's logger reads "warning: ...", as the lines the demo prints and "error: ..."."""
    ok, jpeg = cv2.imencode(".jpg", np.full((40, 30, 3), 128, np.uint8))
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(jpeg.tobytes()[:-2])  # no end marker: cut short
    (tmp_path / "photos" / "b.jpg").write_bytes(jpeg.tobytes())
    completed = run_demo_quickly(tmp_path, "--source", "photos", "--weights", "none.weights.h5")
    assert completed.returncode == MissingWeightsError.exit_code, completed.stderr
    lines = completed.stderr.splitlines()
    assert lines[0] == f"warning: skipping {Path('photos') / 'a.jpg'}: the JPEG is cut short or damaged"
    assert lines[1].startswith("error: no pose weights at none.weights.h5") and len(lines) == 2


def test_a_missing_source_is_named_even_when_weights_are_missing(tmp_path):
    detector = tmp_path / "d.tflite"
    detector.write_bytes(b"x")
    completed = run_demo_quickly(tmp_path, "--source", "nothing.mp4", "--weights", "none.weights.h5",
                                 "--detector", str(detector))
    assert completed.returncode == SourceError.exit_code, completed.stderr
    assert "nothing.mp4" in completed.stderr and "weights" not in completed.stderr
