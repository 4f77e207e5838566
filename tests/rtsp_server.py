"""A local RTSP server for tests/test_streams.py: `python3 rtsp_server.py PORT` serves
rtsp://127.0.0.1:PORT/live (a moving test pattern, 320x240 at 25 fps, JPEG over RTP) until killed,
and prints "ready" once it listens.

It runs under the system Python with Debian's GStreamer RTSP server (python3-gi,
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-base and -good; about 30 s to install): a
well-kept server that makes its own test picture. The Python index has no maintained RTSP server
(the one found, aio-rtsp-toolkit 0.1, serves H.264 files through PyAV; not tried). JPEG over RTP
needs no H.264 encoder (x264 is in gstreamer1.0-plugins-ugly, which is not needed here).
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402  (after require_version)

# RTP/JPEG (RFC 2435) carries 4:2:0 or 4:2:2 JPEG only, hence I420 before the encoder.
PIPELINE = ("( videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,width=320,height=240,"
            "framerate=25/1 ! jpegenc ! rtpjpegpay name=pay0 pt=26 )")


def main(port: str) -> None:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)
    server.get_mount_points().add_factory("/live", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main(sys.argv[1])
