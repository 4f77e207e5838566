"""Network streams as sources: an MJPEG server over HTTP (what phone webcam apps serve) started
here on 127.0.0.1, a video file over HTTP, an RTSP server (Debian's GStreamer RTSP server under the
system Python, tests/rtsp_server.py, which says why not a package from the Python index; skipped
with the reason when it is not installed, failed under POSE_REQUIRE_ASSETS=1), a port nobody
serves, and the masking of credentials.

The demo runs end to end as tests/test_demo.py runs it: a subprocess, headless, random weights.
"""

import http.server
import json
import os
import re
import socket
import subprocess
import threading
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.errors import CameraError, SourceError
from app.sources import StreamSettings, StreamSource, mask_url, open_source, url_scheme
from tests.test_demo import demo_command, demo_env, video_frames

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "hunter2-secret"  # must never appear in anything the demo prints
FAST = StreamSettings(open_timeout_s=3.0, read_timeout_s=2.0, reconnect_for_s=10.0, first_pause_s=0.1,
                      max_pause_s=0.4)


def free_port() -> int:
    """A port nothing listens on (the OS picked it free; it is closed again at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def synthetic_jpegs(count: int, size=(64, 48)) -> list[bytes]:
    """JPEG frames whose grey level is 10 * index (0, 10, 20, ...), so their order can be read back."""
    width, height = size
    return [cv2.imencode(".jpg", np.full((height, width, 3), 10 * i, np.uint8))[1].tobytes() for i in range(count)]


def dancer_jpegs(path: Path, count: int = 50) -> list[bytes]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < count:
        ok, image = capture.read()
        assert ok, f"{path} has fewer than {count} frames"
        frames.append(cv2.imencode(".jpg", image)[1].tobytes())
    capture.release()
    return frames


class MjpegServer:
    """multipart/x-mixed-replace JPEG stream at http://127.0.0.1:PORT/video, served from a thread.

    Loops over `jpegs` at `fps` for as long as a client reads. `drop(down_s)` cuts the current
    connections and answers 503 to every request for `down_s` seconds (a camera that went away and
    comes back); `refused` counts those answers. Written by hand because no library serves MJPEG
    in a few lines: http.server does the HTTP, this class only the multipart framing.
    """

    BOUNDARY = b"frame"

    def __init__(self, jpegs: list[bytes], fps: float = 25.0):
        self.jpegs = jpegs
        self.fps = fps
        self.connections = 0
        self.refused = 0
        self._down_until = 0.0
        self._cut = threading.Event()  # set: cut the connections being served
        self._stop = threading.Event()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_MjpegHandler, self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/video"

    def url_with_password(self) -> str:
        return f"http://viewer:{PASSWORD}@127.0.0.1:{self._server.server_address[1]}/video"

    def drop(self, down_s: float) -> None:
        self._down_until = time.monotonic() + down_s
        self._cut.set()

    def is_down(self) -> bool:
        return time.monotonic() < self._down_until

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


class _MjpegHandler(http.server.BaseHTTPRequestHandler):
    def __init__(self, stream: MjpegServer, *args, **kwargs):
        self.stream = stream
        super().__init__(*args, **kwargs)

    def do_GET(self):
        stream = self.stream
        if stream.is_down():
            stream.refused += 1
            self.send_error(503, "camera away")
            return
        stream._cut.clear()
        stream.connections += 1
        # A small send buffer, as a camera has: frames wait here while the client is busy, not by
        # the hundred in the kernel (which would hide a drop behind seconds of old frames).
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=" + stream.BOUNDARY.decode())
        self.end_headers()
        index = 0
        try:
            while not stream._stop.is_set() and not stream._cut.is_set():
                jpeg = stream.jpegs[index % len(stream.jpegs)]
                self.wfile.write(b"--" + stream.BOUNDARY + b"\r\nContent-Type: image/jpeg\r\n"
                                 + b"Content-Length: %d\r\n\r\n" % len(jpeg) + jpeg + b"\r\n")
                index += 1
                time.sleep(1.0 / stream.fps)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away
        self.close_connection = True

    def log_message(self, *args):
        pass  # keep the test output clean


# --- URLs: recognised, never a path, credentials masked ---------------------------------------

@pytest.mark.parametrize("url, masked", [
    ("rtsp://admin:s3cret@10.0.0.7:554/Streaming/Channels/101",
     "rtsp://admin:***@10.0.0.7:554/Streaming/Channels/101"),
    ("rtsp://10.0.0.7/live?user=admin&password=s3cret&channel=1",
     "rtsp://10.0.0.7/live?user=admin&password=***&channel=1"),
    ("http://192.168.1.5:8080/video?token=s3cret", "http://192.168.1.5:8080/video?token=***"),
    ("rtmp://u:s3cret@host/app/key", "rtmp://u:***@host/app/key"),
    ("rtsp://admin:s3c/ret@cam/live", "rtsp://admin:***@cam/live"),  # an unescaped "/" in the password
    ("rtsp://admin:s3c@ret@cam/live", "rtsp://admin:***@cam/live"),  # an unescaped "@" in the password
    ("rtsp://admin:s3c?ret@cam/live", "rtsp://admin:***@cam/live"),  # an unescaped "?" in the password
    ("http://cam/snap?notify=me@example.org", "http://cam/snap?notify=me@example.org"),  # "@" in a query value
    ("rtsp://viewer@cam/live", "rtsp://viewer@cam/live"),  # a user without a password: nothing secret
    ("tcp://127.0.0.1:5000", "tcp://127.0.0.1:5000"),
    ("videos/clip.mp4", "videos/clip.mp4"),  # not a URL: as it is
])
def test_mask_url_hides_passwords_and_secret_query_values(url, masked):
    assert mask_url(url) == masked
    assert "s3cret" not in mask_url(url) and "ret@" not in mask_url(url).split("@")[0]


class RecordingCapture:
    """Stands in for cv2.VideoCapture: records how it was opened; `frames` then failed reads."""

    def __init__(self, *args, frames=(), opened=True, frame_count=-1.0):
        self.args = args
        self.frames = list(frames)
        self.opened = opened
        self.frame_count = frame_count
        self.released = False

    def isOpened(self):
        return self.opened

    def read(self):
        if not self.frames:
            return False, None
        return True, self.frames.pop(0)

    def get(self, prop):
        return {cv2.CAP_PROP_FPS: 12.0, cv2.CAP_PROP_FRAME_COUNT: self.frame_count}.get(prop, 0.0)

    def release(self):
        self.released = True


def test_a_url_goes_to_ffmpeg_as_written_never_as_a_path():
    opened = []

    def factory(*args):
        opened.append(RecordingCapture(*args, frames=[np.zeros((4, 6, 3), np.uint8)]))
        return opened[-1]

    with open_source("rtsp://cam.local//double//slash", capture_factory=factory, stream=FAST) as source:
        assert source.kind == "stream" and source.is_live and source.frame_count is None
        assert source.size == (6, 4) and source.fps == 12.0
    url, backend, params = opened[0].args
    assert url == "rtsp://cam.local//double//slash" and backend == cv2.CAP_FFMPEG
    assert dict(zip(params[::2], params[1::2])) == {cv2.CAP_PROP_OPEN_TIMEOUT_MSEC: 3000,
                                                    cv2.CAP_PROP_READ_TIMEOUT_MSEC: 2000}
    assert opened[0].released
    assert url_scheme("RTSP://x") == "rtsp" and url_scheme("C:\\clips\\a.mp4") is None


def test_an_unknown_scheme_is_a_source_error_with_the_password_masked():
    with pytest.raises(SourceError, match=r"cannot read ftp:// URLs \(ftp://me:\*\*\*@host/clip.mp4\)") as error:
        open_source(f"ftp://me:{PASSWORD}@host/clip.mp4")
    assert PASSWORD not in str(error.value)


def test_a_stream_that_does_not_open_is_a_camera_error_with_the_password_masked():
    url = f"rtsp://admin:{PASSWORD}@cam/live"
    with pytest.raises(CameraError) as error:
        open_source(url, capture_factory=lambda *args: RecordingCapture(*args, opened=False), stream=FAST)
    assert str(error.value).startswith("cannot connect to rtsp://admin:***@cam/live: ")
    assert PASSWORD not in str(error.value) and error.value.exit_code == 4


def test_a_stream_that_opens_but_sends_nothing_is_a_camera_error():
    with pytest.raises(CameraError, match="connected to rtsp://cam/live but no frame came within 2 s"):
        open_source("rtsp://cam/live", capture_factory=lambda *args: RecordingCapture(*args), stream=FAST)


# --- a real MJPEG server on 127.0.0.1 ----------------------------------------------------------

def test_mjpeg_stream_is_live_and_keeps_the_servers_order():
    with MjpegServer(synthetic_jpegs(20), fps=50.0) as server, open_source(server.url, stream=FAST) as source:
        assert (source.kind, source.is_live, source.frame_count, source.size) == ("stream", True, None, (64, 48))
        frames = []
        for frame in source:
            frames.append(frame)
            if len(frames) == 15:
                break
    levels = [int(round(f.image.mean() / 10)) for f in frames]
    assert levels == list(range(15))  # every frame, in order (JPEG keeps a flat grey within +-1)
    stamps = [f.timestamp_s for f in frames]
    assert stamps[0] == pytest.approx(0.0, abs=0.05) and all(b > a for a, b in zip(stamps, stamps[1:]))


def test_mjpeg_stream_reconnects_after_the_server_goes_away_and_comes_back(caplog):
    with MjpegServer(synthetic_jpegs(20), fps=50.0) as server, \
            open_source(server.url_with_password(), stream=FAST) as source:
        frames = []
        for frame in source:
            frames.append(frame)
            if len(frames) == 5:
                server.drop(down_s=0.6)
            if len(frames) == 20:
                break
        assert source.reconnects == 1 and source.status() == ""  # back: nothing to say any more
    assert server.refused >= 1 and server.connections == 2  # it was away, and then back
    stamps = np.array([f.timestamp_s for f in frames])
    assert np.all(np.diff(stamps) > 0)
    assert np.diff(stamps).max() >= 0.6  # the outage shows as one gap in the wall-clock timestamps
    assert [f.index for f in frames] == list(range(20))
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "stream lost after" in messages and "reconnected after" in messages
    assert PASSWORD not in messages and "viewer:***@127.0.0.1" in messages


def test_a_stream_that_stays_away_ends_with_a_camera_error_naming_the_masked_url():
    settings = StreamSettings(open_timeout_s=1.0, read_timeout_s=1.0, reconnect_for_s=1.0, first_pause_s=0.1,
                              max_pause_s=0.2)
    with MjpegServer(synthetic_jpegs(5), fps=50.0) as server:
        source = open_source(server.url_with_password(), stream=settings)
        server.drop(down_s=60.0)
        with pytest.raises(CameraError, match="could not reconnect within 1 s") as error:
            for _ in source:
                pass
        source.close()
    assert PASSWORD not in str(error.value) and "viewer:***@" in str(error.value)


def test_close_during_a_reconnect_ends_the_reading_thread():
    with MjpegServer(synthetic_jpegs(5), fps=50.0) as server:
        source = StreamSource(server.url, settings=StreamSettings(reconnect_for_s=60.0, first_pause_s=0.2))
        read = []
        reader = threading.Thread(target=lambda: read.extend(source), daemon=True)
        reader.start()
        while not read:
            time.sleep(0.01)
        assert source.status() == ""  # frames are coming
        server.drop(down_s=60.0)
        while server.refused == 0:  # the source is retrying
            time.sleep(0.01)
        # What the demo's window shows over the last frame meanwhile.
        assert re.fullmatch(r"stream lost \d+ s ago: reconnecting \(gives up after 60 s\)", source.status())
        source.close()
        reader.join(timeout=10.0)
        assert not reader.is_alive()
        assert source.status() == ""


def test_quitting_the_demo_while_a_stream_reconnects_does_not_wait_for_the_reconnect(monkeypatch):
    from app import demo
    from app.pipeline import FrameResult

    class Pipeline:
        kalman = True
        frames = 0

        def process(self, image, want_heatmaps=False):
            self.frames += 1
            if self.frames == 5:
                server.drop(down_s=60.0)  # the camera goes away for good
            return FrameResult(people=[], detected=True, timings_ms={})

        def reset(self):
            pass

    class Window:
        """Closed by the user as soon as the window says the stream is reconnecting."""
        closed_at = None

        def __init__(self, name, size, screen):
            pass

        def show(self, image):
            pass

        def wait_key(self, delay_ms):
            time.sleep(delay_ms / 1000)
            return 255

        def closed(self):
            if Window.closed_at is None and source.status():
                Window.closed_at = time.monotonic()
            return Window.closed_at is not None

        def resized(self):
            return False

        def drawing_size(self):
            return (64, 48)

        def destroy(self):
            pass

    monkeypatch.setattr(demo, "Window", Window)
    monkeypatch.setattr(demo, "_draw", lambda *args, **kwargs: (None, np.zeros((48, 64, 3), np.uint8)))
    settings = StreamSettings(open_timeout_s=3.0, read_timeout_s=2.0, reconnect_for_s=60.0, first_pause_s=2.0)
    with MjpegServer(synthetic_jpegs(20), fps=50.0) as server:
        source = open_source(server.url, stream=settings)
        demo.run(demo.DemoOptions(source=server.url, progress=False), Pipeline(), source, show=True)
        returned = time.monotonic() - Window.closed_at
    # The reader was in a 2 s pause between connection attempts: the run ends without waiting for
    # it (nor for the 1 s the demo would give the reader before closing the source under it).
    assert returned < 0.5, f"the demo took {returned:.2f} s to return after the window closed"


# --- a video file over HTTP: read like a file, every frame -------------------------------------

def test_video_file_over_http_is_read_like_a_file(dancer_video):
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(dancer_video.parent))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{dancer_video.name}"
        with open_source(url, stream=FAST) as source:
            assert not source.is_live and source.frame_count == 1572 and source.fps == 25.0
            frames = list(source)
    finally:
        server.shutdown()
        server.server_close()
    in_count, _, _ = video_frames(dancer_video)
    assert len(frames) == in_count
    assert frames[-1].timestamp_s == pytest.approx((in_count - 1) / 25.0)


# --- the demo end to end -----------------------------------------------------------------------

def run_demo_on(url: str, tmp_path: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(demo_command("--source", url, *args), cwd=tmp_path, env=demo_env(),
                          capture_output=True, text=True, timeout=timeout)


def test_demo_reads_40_frames_from_an_mjpeg_stream(tmp_path, dancer_video, detector_path, random_weights):
    with MjpegServer(dancer_jpegs(dancer_video)) as server:
        completed = run_demo_on(server.url, tmp_path, "--weights", str(random_weights), "--detector",
                                str(detector_path), "--detector-size", "320", "--max-frames", "40")
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
    assert f"connecting to {server.url} ..." in completed.stderr
    assert f"{server.url}: 518x496 at 25 fps;" in completed.stderr  # the start-up line
    assert "40 frames processed" in completed.stderr


def test_demo_goes_on_after_the_stream_drops_and_writes_one_whole_video(tmp_path, dancer_video, detector_path,
                                                                          random_weights):
    out_video, out_json = tmp_path / "out.avi", tmp_path / "out.json"
    # 10 fps: the 35 frames after the drop take at least 3.5 s of stream, so the drop, once 5
    # frames are in the JSON, comes in the middle of the run however fast the machine is.
    with MjpegServer(dancer_jpegs(dancer_video), fps=10.0) as server:
        url = server.url_with_password()
        process = subprocess.Popen(
            demo_command("--source", url, "--weights", str(random_weights), "--detector", str(detector_path),
                         "--max-frames", "40", "--output", str(out_video), "--json", str(out_json)),
            cwd=tmp_path, env=demo_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 600
            while process.poll() is None and time.monotonic() < deadline:
                if out_json.exists() and out_json.read_text().count('"frame":') >= 5:
                    break
                time.sleep(0.05)
            server.drop(down_s=1.5)
            stdout, stderr = process.communicate(timeout=600)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr and PASSWORD not in stderr + stdout
    assert "stream lost after" in stderr and "reconnected after" in stderr
    assert server.refused >= 1 and server.connections == 2

    count, fps, size = video_frames(out_video)  # one file that plays to its end
    assert (count, size) == (40, (518, 496)) and fps == pytest.approx(25.0)
    document = json.loads(out_json.read_text())
    assert PASSWORD not in out_json.read_text() and document["source"] == mask_url(url)
    stamps = np.array([frame["time_s"] for frame in document["frames"]])
    assert len(stamps) == 40 and np.all(np.diff(stamps) > 0)
    assert np.diff(stamps).max() >= 1.5  # the outage, as one gap


@pytest.mark.parametrize("debug", [False, True])
def test_demo_on_an_rtsp_port_nobody_serves_ends_in_a_few_lines_without_the_password(tmp_path, random_weights,
                                                                                      debug):
    url = f"rtsp://admin:{PASSWORD}@127.0.0.1:{free_port()}/live"
    completed = run_demo_on(url, tmp_path, "--weights", str(random_weights), *(["--debug"] if debug else []),
                            timeout=30)
    output = completed.stdout + completed.stderr
    assert PASSWORD not in output  # FFmpeg's own messages included (shown under --debug)
    masked = mask_url(url)
    if debug:  # the traceback, with the masked URL in its last line
        assert completed.returncode != 0 and f"CameraError: cannot connect to {masked}" in completed.stderr
    else:
        assert completed.returncode == CameraError.exit_code, completed.stderr[-2000:]
        lines = completed.stderr.strip().splitlines()
        assert len(lines) <= 3 and "Traceback" not in output, lines
        assert lines[-1] == (f"error: cannot connect to {masked}: refused, not found, wrong password or not a "
                             "video stream; check the address, port, path and credentials")
    assert f"connecting to {masked} ..." in completed.stderr


# --- a real RTSP server ------------------------------------------------------------------------

def require_rtsp_server() -> None:
    """Skip with the reason when tests/rtsp_server.py cannot run here; fail instead under
    POSE_REQUIRE_ASSETS=1 (CI, whose .ci/run installs the packages), as the window tests do."""
    check = subprocess.run(["/usr/bin/python3", "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                            "from gi.repository import GstRtspServer"], capture_output=True, timeout=60) \
        if Path("/usr/bin/python3").exists() else None
    if check is not None and check.returncode == 0:
        return
    message = ("the RTSP server needs Debian's GStreamer RTSP server under /usr/bin/python3: apt-get install "
               "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good")
    if os.environ.get("POSE_REQUIRE_ASSETS") == "1":
        pytest.fail(message + "; POSE_REQUIRE_ASSETS=1 forbids skipping", pytrace=False)
    pytest.skip(message)


def test_demo_reads_40_frames_from_an_rtsp_server(tmp_path, detector_path, random_weights):
    require_rtsp_server()
    port = free_port()
    server = start_rtsp_server(port)
    try:
        url = f"rtsp://127.0.0.1:{port}/live"
        completed = run_demo_on(url, tmp_path, "--weights", str(random_weights), "--detector",
                                str(detector_path), "--detector-size", "320", "--max-frames", "40")
    finally:
        server.kill()
        server.wait()
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
    assert f"{url}: 320x240 at 25 fps;" in completed.stderr
    assert "40 frames processed" in completed.stderr


def start_rtsp_server(port: int) -> subprocess.Popen:
    server = subprocess.Popen(["/usr/bin/python3", str(ROOT / "tests" / "rtsp_server.py"), str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "ready", server.stderr.read()
    return server


def test_rtsp_stream_reconnects_when_its_server_restarts(caplog):
    require_rtsp_server()
    port = free_port()
    servers = [start_rtsp_server(port)]
    try:
        frames = []
        with open_source(f"rtsp://admin:{PASSWORD}@127.0.0.1:{port}/live", stream=FAST) as source:
            assert (source.is_live, source.size) == (True, (320, 240))
            for frame in source:
                frames.append(frame)
                if len(frames) == 10:
                    servers[0].kill()  # the camera goes away ...
                    servers[0].wait()
                    servers.append(start_rtsp_server(port))  # ... and comes back on the same address
                if len(frames) == 40:
                    break
            assert source.reconnects == 1
    finally:
        for server in servers:
            server.kill()
            server.wait()
    stamps = np.array([f.timestamp_s for f in frames])
    assert [f.index for f in frames] == list(range(40)) and np.all(np.diff(stamps) > 0)
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "reconnected after" in messages and PASSWORD not in messages
