"""The demo's window: whether a display can be used, how big the screen is, and the window itself.

`cv2.imshow` aborts the whole process (uncatchable) when OpenCV's Qt or GTK backend cannot reach
the X display: DISPLAY unset, set to a server that is not there (`DISPLAY=:98`), or a dead SSH X
forward. So `probe_display()` connects to the display first, in this process, through libxcb (the
library Qt's xcb platform plugin itself connects with, so a display it reaches is one Qt reaches;
the Xauthority cookie is used as Qt would), with a time limit for a forward that never answers.
A connection costs about a millisecond; it also gives the screen size the window is fitted to.

    display = probe_display()                 # Display(ok, reason, screen)
    if display.ok:
        window = Window("pose", frame_size=(W, H), screen=display.screen)
        window.show(image); key = window.wait_key(1)
        if window.closed(): ...                # the title bar's x / the window manager's close
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

DEFAULT_SCREEN = (1280, 720)  # the largest window when the screen size is unknown
SCREEN_MARGIN = (0.92, 0.85)  # share of the screen's (W, H) a new window may take: title bar, panels, dock
PROBE_TIMEOUT_S = 1.0  # a display that does not answer the connection within this is unusable


@dataclass(frozen=True)
class Display:
    ok: bool
    reason: str  # why not, for the one line the user sees; "" when ok
    screen: tuple[int, int] | None = None  # (W, H) in pixels when known


def gui_backend() -> str:
    """OpenCV's GUI framework: "QT", "GTK", "WIN32", "COCOA", ... or "NONE" (opencv-python-headless)."""
    if hasattr(cv2, "currentUIFramework"):
        return cv2.currentUIFramework().upper() or "NONE"
    line = next((ln for ln in cv2.getBuildInformation().splitlines() if "GUI:" in ln), "GUI: NONE")
    return line.split(":", 1)[1].strip().upper() or "NONE"


def probe_display(timeout_s: float = PROBE_TIMEOUT_S) -> Display:
    """Whether a window can be opened without risking the process, and the screen size if known."""
    backend = gui_backend()
    if backend.startswith("NONE"):
        return Display(False, "this OpenCV has no GUI (opencv-python-headless?)")
    if not sys.platform.startswith("linux"):
        return Display(True, "")  # Windows and macOS always have a desktop when a user runs this
    display = os.environ.get("DISPLAY", "")
    if not display:
        if "GTK" in backend and os.environ.get("WAYLAND_DISPLAY"):
            return Display(True, "")  # GTK speaks Wayland itself; Qt's wheel plugin only speaks X11
        return Display(False, "DISPLAY is not set")
    try:
        libxcb = ctypes.CDLL("libxcb.so.1")
    except OSError:
        # No libxcb, so Qt's xcb plugin cannot load either; GTK builds may still work: trust DISPLAY.
        return Display("GTK" in backend, "" if "GTK" in backend else "libxcb is not installed")
    outcome: list = []
    # A dead SSH forward may accept the connection and never answer: connect in a thread we can
    # walk away from (ctypes releases the GIL during the call).
    thread = threading.Thread(target=lambda: outcome.append(_xcb_screen(libxcb, display)), daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        return Display(False, f"display {display} does not answer")
    screen = outcome[0]
    if screen is None:
        return Display(False, f"cannot connect to display {display}")
    return Display(True, "", screen if screen != (0, 0) else None)


class _ScreenIterator(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("rem", ctypes.c_int), ("index", ctypes.c_int)]


def _xcb_screen(libxcb, display: str) -> tuple[int, int] | None:
    """(W, H) of the display's default screen, or None when it cannot be connected to.

    By hand with ctypes because no library the project installs speaks X11 (python-xlib is
    not a dependency), and a child process that imports OpenCV would cost half a second.
    """
    libxcb.xcb_connect.restype = ctypes.c_void_p
    libxcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    libxcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    libxcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    libxcb.xcb_get_setup.restype = ctypes.c_void_p
    libxcb.xcb_get_setup.argtypes = [ctypes.c_void_p]
    libxcb.xcb_setup_roots_iterator.restype = _ScreenIterator
    libxcb.xcb_setup_roots_iterator.argtypes = [ctypes.c_void_p]
    libxcb.xcb_screen_next.argtypes = [ctypes.POINTER(_ScreenIterator)]
    screen_number = ctypes.c_int(0)
    connection = libxcb.xcb_connect(display.encode(), ctypes.byref(screen_number))
    try:
        if not connection or libxcb.xcb_connection_has_error(connection):
            return None
        roots = libxcb.xcb_setup_roots_iterator(libxcb.xcb_get_setup(connection))
        for _ in range(min(screen_number.value, max(roots.rem - 1, 0))):
            libxcb.xcb_screen_next(ctypes.byref(roots))
        if not roots.data:
            return (0, 0)
        # xcb_screen_t: five uint32 (root, colormap, white, black, input masks), then width, height.
        width = ctypes.c_uint16.from_address(roots.data + 20).value
        height = ctypes.c_uint16.from_address(roots.data + 22).value
        return (width, height)
    finally:
        if connection:
            libxcb.xcb_disconnect(connection)


def fit_size(frame_size: tuple[int, int], screen: tuple[int, int] | None) -> tuple[int, int]:
    """The window's first (W, H): the frame's aspect ratio, no larger than the frame nor than the
    usable part of the screen (DEFAULT_SCREEN when unknown)."""
    width, height = frame_size
    if screen:
        limit_w, limit_h = screen[0] * SCREEN_MARGIN[0], screen[1] * SCREEN_MARGIN[1]
    else:
        limit_w, limit_h = DEFAULT_SCREEN  # already a window size that fits any screen in use
    scale = min(1.0, limit_w / width, limit_h / height)
    return max(1, int(width * scale + 0.5)), max(1, int(height * scale + 0.5))


def quiet_qt_fonts() -> None:
    """Points Qt at the system's fonts: the opencv-python wheel sets QT_QPA_FONTDIR to a folder it
    does not ship, and Qt warns five times about it (a known wheel problem). Call after `import cv2`
    (which sets it) and before the first window."""
    configured = os.environ.get("QT_QPA_FONTDIR")
    if configured and Path(configured).is_dir():
        return
    for folder in ("/usr/share/fonts", "/usr/local/share/fonts", str(Path.home() / ".fonts")):
        if Path(folder).is_dir():
            os.environ["QT_QPA_FONTDIR"] = folder
            return
    rules = os.environ.get("QT_LOGGING_RULES")
    os.environ["QT_LOGGING_RULES"] = (rules + ";" if rules else "") + "qt.text.font.db=false;default.warning=false"


class Window:
    """One resizable OpenCV window that shows each image pixel for pixel and knows when it was closed.

    The backend never scales: `drawing_size()` says the picture area's (W, H) now, the caller draws
    at that size (app.views.compose_view: the video fitted inside, aspect kept, black bars), and
    `show` letterboxes anything else into it. OpenCV's own WINDOW_KEEPRATIO (Qt) only acts when the
    window is resized: an image of another shape than the last (the heatmap panel, side by side)
    was stretched to the window, squashing the video; so the window is FREERATIO and we keep the
    aspect ratio ourselves.
    """

    def __init__(self, title: str, frame_size: tuple[int, int], screen: tuple[int, int] | None):
        self.title = title
        quiet_qt_fonts()
        # GUI_NORMAL: no Qt toolbar and status bar, so the image gets the whole window.
        cv2.namedWindow(title, cv2.WINDOW_NORMAL | cv2.WINDOW_FREERATIO | cv2.WINDOW_GUI_NORMAL)
        self.size = fit_size(frame_size, screen)  # the picture area's (W, H), as last asked (drawing_size)
        self._shown_size: tuple[int, int] | None = None
        cv2.resizeWindow(title, *self.size)
        if screen:
            # The window manager placed the window at its first, default size; centre the fitted one
            # so all of it is on the screen (a little above centre: the title bar).
            cv2.moveWindow(title, max(0, (screen[0] - self.size[0]) // 2), max(0, (screen[1] - self.size[1]) // 2 - 16))
        self._seen = False  # the window was reported visible once (a backend that cannot tell says -1)
        self._closed = False

    def drawing_size(self) -> tuple[int, int]:
        """(W, H) of the window's picture area now (the user may have resized it): draw at this size."""
        if not self._closed:
            try:
                _, _, width, height = cv2.getWindowImageRect(self.title)
            except cv2.error:
                width = height = 0
            if width > 0 and height > 0:
                self.size = (int(width), int(height))
        return self.size

    def resized(self) -> bool:
        """Whether the picture area's size changed since the last `show` (a paused frame is redrawn)."""
        return self._shown_size is not None and self.drawing_size() != self._shown_size

    def show(self, image: np.ndarray) -> None:
        """Shows image, letterboxed into the picture area's size when it is not that size already."""
        if not self._closed:
            image = letterbox(image, self.size)
            cv2.imshow(self.title, image)
            self._shown_size = self.size

    def wait_key(self, delay_ms: int) -> int:
        """cv2.waitKey(delay_ms) & 0xFF (255 when no key); also notices a close."""
        key = cv2.waitKey(delay_ms)
        self.closed()
        return key & 0xFF

    def closed(self) -> bool:
        """Whether the user closed the window (window manager close, the title bar's x).

        Qt destroys a closed window, after which getWindowProperty raises (no window left) or says
        0; GTK and Win32 say 0. imshow would bring it back, so the caller must stop showing.
        """
        if self._closed:
            return True
        try:
            visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE)
        except cv2.error:
            visible = 0.0 if self._seen else -1.0
        if visible >= 1:
            self._seen = True
        elif self._seen:
            self._closed = True
        return self._closed

    def destroy(self) -> None:
        try:
            cv2.destroyAllWindows()
            cv2.waitKey(1)  # lets the backend process the destroy before the process goes on
        except cv2.error:
            pass


def letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """image (H, W, 3) scaled to fit (W, H) `size`, keeping its aspect ratio, centred on black."""
    width, height = size
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = resized
    return canvas
