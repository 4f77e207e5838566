"""The demo loop: read frames, run the pipeline, draw, write and show, in three overlapped stages.

    reader thread      -> frames ->  inference thread  -> results ->  main thread  -> writes ->  writer thread
    (decode the source)              (PosePipeline)                    (view, show, keys)         (draw, encode, JSON)

Each stage runs while the others work, so the frame rate is set by the slowest stage rather than
by their sum (OpenCV decoding/encoding and ONNX Runtime release the GIL). The writer draws what
--output records and writes the outputs, in order, every frame: its queue is bounded and blocks
when full, so a slow disk slows the run rather than dropping frames or filling the memory. A file is read in order
and never drops a frame: the queues block when full. A live camera always delivers its newest
frame: the reader keeps only the latest one, so a slow model shows fresh frames, not stale ones.

While the offline smoother fills (its first `lag` frames), the inference thread also hands each
frame over at once as a `Preview`: the window shows it unsmoothed, marked "smoothing...", and
nothing is written; the smoothed frames follow from the first one. The view is drawn at the
window's current size (Window.drawing_size, asked on the main thread).

The main thread owns the window (OpenCV's GUI must run there, app.window) and the outputs; whatever
stops the run (end of input, q/Esc, closing the window, Ctrl-C, a camera that fails, an error)
closes the outputs in a `finally` so the video written so far plays and the JSON parses. While
paused, or while a still image waits for a key, the main thread keeps looking at the keyboard and
the window every 20 ms, and redraws the frame on screen whenever a key changes the view.
"""

import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from app.offline import offline_stage
from app.outputs import JsonOutput, VideoOutput, check_output_path, person_record
from app.pipeline import FrameResult, PipelineConfig, PosePipeline
from app.stills import ImageOutput, image_output_path, wants_images
from app.views import ViewState, annotate, compose_view, handle_key
from app.window import Window, letterbox

log = logging.getLogger(__name__)

WINDOW = "pose"  # the keys are listed in the window itself (HUD legend, ?)
_END = object()  # sentinel that closes a queue
DRAIN_S = 0.5  # after q, how long the outputs wait for the frames the offline smoother still holds
WRITE_QUEUE = 8  # frames waiting for the writer thread at most


@dataclass
class DemoOptions:
    source: str = "0"
    weights: str | None = None
    detector: str = "yolov8n.pt"
    detector_conf: float = 0.1
    detector_imgsz: int = 640
    runtime: str = "auto"
    output: str | None = None
    json: str | None = None
    overwrite: bool = False
    headless: bool = False
    flip: bool = False
    decode: str = "dark"
    threshold: float = 0.3
    max_frames: int | None = None
    progress: bool = True
    smoothing: str = "auto"  # auto | live | offline (app.offline.choose_smoothing: offline for files written out)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    # The window (issue 13).
    record_view: bool = False  # --output records what the window shows instead of the annotated frame
    image_delay: float = 0.0  # seconds a still image stays in the window; 0: until a key
    mirror: bool | None = None  # selfie view; None: for cameras only
    runs_on: str = ""  # where each network runs, for the HUD: app.device.hud_line, set by run_demo.py




def person_json(person, threshold: float) -> dict:
    """One tracked person in the JSON output's format (app.outputs), with its visible flags: the
    joints drawn. With Kalman on, those the filter holds (Person.visible); off, the raw keypoints
    scoring at least `threshold` (--threshold), as app.views draws them."""
    record = person_record(person.box, person.box_score, person.keypoints, person.scores, person.track_id)
    visible = person.visible if person.kalman else np.asarray(person.scores) >= threshold
    record["visible"] = [bool(v) for v in visible]
    return record


def _reader(source, frames: queue.Queue, stop: threading.Event, live: bool) -> None:
    """Reads frames into `frames`; for a live source keep only the newest (drop the stale one)."""
    try:
        for frame in source:
            while not stop.is_set():
                try:
                    frames.put(frame, timeout=0.1)
                    break
                except queue.Full:
                    if live:
                        try:
                            frames.get_nowait()  # the model is behind: a live view wants the newest frame
                        except queue.Empty:
                            pass
            if stop.is_set():
                return
    except BaseException as error:  # handed to the main thread (KeyboardInterrupt too), which closes the outputs
        frames.put(error)
        return
    frames.put(_END)


@dataclass
class Preview:
    """A frame the offline smoother holds while it fills, for the window only: shown at once, as the
    pipeline made it (live smoothing), never written; its smoothed pair follows `lag` frames later."""

    frame: object
    result: FrameResult
    held: int  # frames the smoother holds now
    lag: int  # frames it holds before the first comes out


def _inference(pipeline: PosePipeline, frames: queue.Queue, results: queue.Queue, stop: threading.Event,
               want_heatmaps: threading.Event, independent: bool, smoothing=None,
               drain: threading.Event | None = None, previews: bool = False) -> None:
    """independent: frames are unrelated images (a folder), so nothing is tracked or smoothed across them.
    smoothing: None (the pipeline's live smoothing) or an app.offline.FixedLagStage, whose pairs come
    out a fixed number of frames late with offline-smoothed keypoints; flushed when the input ends,
    on an error, and when `drain` is set (the user quit: the held frames were processed, so they
    reach the outputs, followed by _END). previews: until the smoother gives its first pair, each
    frame also goes out at once as a `Preview`, so a window is not blank while the smoother fills."""

    def put(pair) -> None:
        while not stop.is_set():
            try:
                results.put(pair, timeout=0.1)
                return
            except queue.Full:
                pass

    def put_held() -> None:
        """The frames the offline stage still holds were processed: every one reaches the outputs."""
        for pair in smoothing.flush() if smoothing is not None else ():
            put(pair)

    filling = previews and smoothing is not None
    try:
        while not stop.is_set():
            if drain is not None and drain.is_set():
                put_held()
                put(_END)
                return
            try:
                item = frames.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _END or isinstance(item, BaseException):
                put_held()
                results.put(item)
                return
            if independent:
                pipeline.reset(restart_ids=True)  # unrelated images: each one's people are #1, #2, ...
            result = pipeline.process(item.image, want_heatmaps=want_heatmaps.is_set())
            pairs = smoothing.push(item, result) if smoothing is not None else [(item, result)]
            filling = filling and not pairs
            if filling:
                put(Preview(item, result, len(smoothing), smoothing.lag))
            for pair in pairs:
                put(pair)
    except BaseException as error:  # a thread that dies silently would leave the main thread waiting forever
        try:  # the held frames reach the outputs before the error
            put_held()
        finally:
            results.put(error)


class OutputWriter:
    """Runs `write(item)` for every item `put`, in order, in its own thread ("writer").

    put() blocks while `maxsize` items wait (nothing is dropped). An error in write() stops the
    writing; the next put() or close() raises that same error in the caller's thread, so it reaches
    the user as any error of the main thread would (one line for a PoseError, app.errors).
    """

    def __init__(self, write, maxsize: int = WRITE_QUEUE):
        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.error: BaseException | None = None
        self._finished = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name="writer")
        self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self.error is not None:
                continue  # after an error nothing more is written; the queue drains so put() never hangs
            try:
                self._write(item)
            except BaseException as error:  # handed to the caller's thread
                self.error = error

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, item) -> None:
        self._raise()
        while True:
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                self._raise()

    def finish(self) -> None:
        """Waits until every item put is written (or the writer failed); never raises."""
        if not self._finished:
            self._finished = True
            self._queue.put(_END)  # the loop always drains, so this waits at most for the queued writes
        self._thread.join()

    def close(self) -> None:
        """finish(), then raises the writer's error, if it met one."""
        self.finish()
        self._raise()


def check_outputs(options: DemoOptions, source=None) -> tuple[Path | None, Path | None]:
    """Fails before any work when an output cannot be written (missing folder, read-only, exists).
    (video path, JSON path); --output naming images (app.stills) is checked here and is no video."""
    images = options.output and wants_images(options.output)
    if images:
        image_output_path(options.output, source, options.overwrite)
    video_path = check_output_path(options.output, options.overwrite) if options.output and not images else None
    json_path = check_output_path(options.json, options.overwrite) if options.json else None
    return video_path, json_path


def mirror_result(result: FrameResult, width: int) -> FrameResult:
    """`result` as seen in a mirror of a `width`-pixel-wide frame (cv2.flip(frame, 1)), for drawing.

    Only positions move: a left wrist stays a left wrist, so its colour stays anatomical.
    Keypoints are pixel centres (x -> W-1-x, as cv2.flip maps pixels); boxes are edges (x -> W-x).
    """
    people = []
    for person in result.people:
        x1, y1, x2, y2 = np.asarray(person.box, np.float64)
        people.append(replace(
            person,
            box=np.array([width - x2, y1, width - x1, y2], np.asarray(person.box).dtype),
            raw_keypoints=_mirror_points(person.raw_keypoints, width),
            smoothed_keypoints=_mirror_points(person.smoothed_keypoints, width),
        ))
    heatmaps = None if result.heatmaps is None else np.ascontiguousarray(result.heatmaps[:, :, ::-1, :])
    return replace(result, people=people, heatmaps=heatmaps)


def _mirror_points(points: np.ndarray, width: int) -> np.ndarray:
    mirrored = np.array(points, copy=True)
    mirrored[..., 0] = (width - 1) - mirrored[..., 0]
    return mirrored


def _draw(frame, result: FrameResult, state: ViewState, kalman: bool, fps: float, threshold: float,
          mirror: bool, record: bool, view: bool, runs_on: str = "", size: tuple[int, int] | None = None,
          banner: str = "") -> tuple[np.ndarray | None, np.ndarray | None]:
    """(recorded, shown) for one frame, the one place the views are drawn.

    recorded: app.views.annotate (skeletons and boxes, the frame's size, the source's own
    coordinates like the JSON): what --output records by default; None unless `record`.
    shown: app.views.compose_view at `size` (the window's (W, H); None: the frame's), mirrored
    for a selfie view: what the window shows and --record-view records; None unless `view`, so a
    headless run pays for no HUD. banner: a note in the HUD (a Preview's "smoothing...").
    """
    recorded = annotate(frame.image, result, state, kalman, threshold) if record else None
    shown = None
    if view:
        image = frame.image
        if mirror:
            image = cv2.flip(frame.image, 1)
            result = mirror_result(result, image.shape[1])
        shown = compose_view(image, result, state, kalman, fps, threshold, runs_on, size, banner)
    return recorded, shown


def _interact(window: Window, state: ViewState, pipeline: PosePipeline, redraw, hold_s: float | None) -> None:
    """Handles the window after a frame was shown, until the run should go on (or quit).

    Every key that changes the view redraws the current frame at once (`redraw() -> image`),
    paused or not. While paused it waits, responsive; a still image waits too, `hold_s` seconds
    (0: until a key that changes nothing, e.g. Enter); hold_s None: a video, go on at once.
    A window closed by the user sets state.quit, as q does.
    """
    started = time.monotonic()
    delay_ms = 1
    while not state.quit:
        key = window.wait_key(delay_ms)
        delay_ms = 20  # after the first look, wait in small steps: keys, close and Ctrl-C within 20 ms
        if window.closed():
            state.quit = True
            return
        if key != 255:
            changed = handle_key(key, state, pipeline)  # whether the key changed what is drawn
            if state.quit:
                return
            if changed:
                if redraw is not None:
                    window.show(redraw())
            elif hold_s is not None and not state.paused:
                return  # any other key moves on to the next image
        elif redraw is not None and window.resized():
            window.show(redraw())  # the user resized the window: draw the frame at its new size
        if state.paused:
            continue
        if hold_s is None or (hold_s > 0 and time.monotonic() - started >= hold_s):
            return


def run(options: DemoOptions, pipeline: PosePipeline, source, show: bool,
        screen: tuple[int, int] | None = None) -> int:
    """Runs the demo on an opened source until it ends or the user quits; returns frames processed.

    show: open a window (the caller has checked the display: app.window.probe_display); screen:
    its (W, H) when known, to fit the window. Raises the first error a stage met (after closing the
    outputs), KeyboardInterrupt on Ctrl-C. Closing the window ends the run as q does.
    """
    video_path, json_path = check_outputs(options, source)
    images = (ImageOutput(image_output_path(options.output, source, options.overwrite))
              if options.output and video_path is None else None)  # app.stills: an image source's --output
    live = bool(getattr(source, "is_live", False))
    kind = getattr(source, "kind", "")
    mirror = options.mirror if options.mirror is not None else kind == "camera"
    hold_s = options.image_delay if kind == "images" else None
    video = VideoOutput(video_path, fps=source.fps or 25.0) if video_path else None
    record_size = None  # --record-view: the first view's (W, H); wider views are letterboxed into it
    width, height = source.size
    json_out = (JsonOutput(json_path, source=str(options.source), fps=source.fps, width=width, height=height)
                if json_path else None)

    frames: queue.Queue = queue.Queue(maxsize=1 if live else 8)
    results: queue.Queue = queue.Queue(maxsize=4)
    stop = threading.Event()
    want_heatmaps = threading.Event()
    drain = threading.Event()
    smoothing = offline_stage(options.smoothing, source, video_path or json_path)
    threads = [
        threading.Thread(target=_reader, args=(source, frames, stop, live), daemon=True, name="reader"),
        threading.Thread(target=_inference, args=(pipeline, frames, results, stop, want_heatmaps,
                                                    kind == "images", smoothing, drain, show),
                         daemon=True, name="inference"),
    ]
    # The HUD and the compare pane name the smoother whose keypoints they show.
    state = ViewState(smoothing=f"offline Kalman, {smoothing.lag} frames behind" if smoothing is not None
                      else "live Kalman")
    progress = _progress_bar(options, source, live)
    count = 0
    fps = 0.0
    last = time.perf_counter()
    window = None
    redraw = None  # redraws the frame on screen (after a key changed the view)
    waiting_note = ""  # the source's status() shown over the last frame while no frame comes

    recording = video is not None or images is not None

    def write(item) -> None:
        """In the writer thread: one frame to the outputs. recorded: the picture to record when the
        main thread drew it already (--record-view records the view), else None: drawn here."""
        nonlocal record_size
        frame, result, kalman, recorded = item
        if recorded is None and recording:
            recorded = _draw(frame, result, state, kalman, fps, options.threshold, mirror,
                             record=True, view=False, runs_on=options.runs_on)[0]
        if video is not None:
            if options.record_view:
                record_size = record_size or (recorded.shape[1], recorded.shape[0])
                video.write(letterbox(recorded, record_size))
            else:
                video.write(recorded)
        if images is not None:
            images.write(recorded, frame.name)
        if json_out is not None:
            json_out.write_frame(frame.index, frame.timestamp_s,
                                 [person_json(p, options.threshold) for p in result.people])

    writer = OutputWriter(write) if recording or json_out is not None else None

    def deliver(frame, result, view: bool):
        """Draws the view of one result and hands the result to the writer; returns what the window
        shows (None unless view)."""
        nonlocal count
        kalman = pipeline.kalman  # as it is now: a later k press does not change this frame's recording
        # The window's size is read here, on the GUI thread; the recording is drawn in the writer.
        _, shown = _draw(frame, result, state, kalman, fps, options.threshold, mirror, record=False,
                         view=view or (recording and options.record_view), runs_on=options.runs_on,
                         size=window.drawing_size() if window is not None else None)
        if writer is not None:
            writer.put((frame, result, kalman, shown if options.record_view else None))
        count += 1
        if progress is not None:
            progress.update(1)
        return shown

    try:
        if show:
            window = Window(WINDOW, (width, height), screen)
            # Heatmaps travel with every result while a window is open, so h shows them at once,
            # paused too (a copy of what the model computes anyway).
            want_heatmaps.set()
        for thread in threads:
            thread.start()
        while not state.quit:
            try:
                item = results.get(timeout=0.02 if window is not None else 0.1)
            except queue.Empty:
                if window is not None:
                    # No frame for a while: a stream reconnecting says so over the last frame (the
                    # terminal has the same in its warning line, not where a window's user looks),
                    # also when a key redraws it. The next frame is drawn as it comes.
                    note = source.status() if hasattr(source, "status") else ""
                    view = redraw
                    if note and redraw is not None:
                        view = partial(redraw, banner=note)
                        if note != waiting_note:
                            window.show(view())
                            waiting_note = note
                    _interact(window, state, pipeline, view, None)
                continue
            waiting_note = ""
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            now = time.perf_counter()
            fps = 0.9 * fps + 0.1 / max(now - last, 1e-6) if fps else 1.0 / max(now - last, 1e-6)
            last = now
            banner = ""
            if isinstance(item, Preview):  # the offline smoother is filling: show, write nothing
                frame, result = item.frame, item.result
                banner = f"smoothing... {item.held}/{item.lag} frames (shown unsmoothed, written smoothed)"
                shown = _draw(frame, result, state, pipeline.kalman, fps, options.threshold, mirror, record=False,
                              view=True, runs_on=options.runs_on, size=window.drawing_size(), banner=banner)[1]
            else:
                frame, result = item
                shown = deliver(frame, result, view=window is not None)
            if window is not None:
                window.show(shown)

                def redraw(frame=frame, result=result, fps=fps, banner=banner):
                    return _draw(frame, result, state, pipeline.kalman, fps, options.threshold, mirror,
                                 record=False, view=True, runs_on=options.runs_on, size=window.drawing_size(),
                                 banner=banner)[1]

                _interact(window, state, pipeline, redraw, hold_s)
            if options.max_frames is not None and count >= options.max_frames:
                break
        if state.quit and smoothing is not None and (video is not None or json_out is not None):
            # q, Esc or a closed window: the offline smoother holds up to `lag` frames the model has
            # already processed; they go to the outputs too (within DRAIN_S, so quitting stays prompt).
            drain.set()
            deadline = time.monotonic() + DRAIN_S
            while time.monotonic() < deadline:
                try:
                    item = results.get(timeout=0.05)
                except queue.Empty:
                    continue
                if item is _END or isinstance(item, BaseException):
                    break
                if not isinstance(item, Preview):
                    deliver(*item, view=False)
        if writer is not None:
            writer.close()  # every frame delivered is written; raises the writer's error, if any
    finally:
        stop.set()
        if hasattr(source, "interrupt"):
            source.interrupt()  # a stream reconnecting would keep the reader waiting up to its pause (4 s)
        for thread in threads:
            # The reader may be inside the source's read: it must be out before the source closes.
            # The inference thread touches neither the source nor the outputs: a frame it is still
            # computing (seconds on a crowded street under load) is dropped, not waited for.
            thread.join(timeout=1.0 if thread.name == "reader" else 0.05)
        if writer is not None:
            writer.finish()  # the frames handed over reach the outputs before they close (Ctrl-C, errors)
        source.close()
        if video is not None:
            video.close()
        if images is not None:
            images.close()
        if json_out is not None:
            json_out.close()
        if progress is not None:
            progress.close()
        if window is not None:
            window.destroy()
    return count


def _progress_bar(options: DemoOptions, source, live: bool):
    if live or not options.progress:
        return None
    from tqdm import tqdm

    total = getattr(source, "frame_count", None)
    if options.max_frames is not None:
        total = min(total, options.max_frames) if total else options.max_frames
    return tqdm(total=total, unit="frame", desc=Path(str(options.source)).name, leave=True)
