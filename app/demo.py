"""The demo loop: read frames, run the pipeline, draw, write and show, in three overlapped stages.

    reader thread      -> frames ->  inference thread  -> results ->  main thread
    (decode the source)              (PosePipeline)                    (draw, write, show, keys)

Each stage runs while the others work, so the frame rate is set by the slowest stage rather than
by their sum (OpenCV decoding/encoding and ONNX Runtime release the GIL). A file is read in order
and never drops a frame: the queues block when full. A live camera always delivers its newest
frame: the reader keeps only the latest one, so a slow model shows fresh frames, not stale ones.

The main thread owns the window (OpenCV's GUI must run there) and the outputs; whatever stops the
run (end of input, q/Esc, Ctrl-C, a camera that fails, an error) closes the outputs in a `finally`
so the video written so far plays and the JSON parses.
"""

import logging
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from app import draw
from app.offline import offline_stage
from app.outputs import JsonOutput, VideoOutput, check_output_path, person_record
from app.pipeline import FrameResult, PipelineConfig, PosePipeline

log = logging.getLogger(__name__)

WINDOW = "pose (q quit, k kalman, space pause, h heatmaps, c compare)"
_END = object()  # sentinel that closes a queue


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


def display_available() -> bool:
    """Whether a window can be opened: cv2.imshow aborts the whole process when it cannot."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    build = cv2.getBuildInformation()
    gui_line = next((line for line in build.splitlines() if "GUI:" in line), "")
    return "NONE" not in gui_line.upper()


@dataclass
class ViewState:
    """What the user toggled with keys."""

    paused: bool = False
    heatmaps: bool = False
    compare: bool = False
    quit: bool = False


def handle_key(key: int, state: ViewState, pipeline: PosePipeline) -> None:
    """Keys: q/Esc quit, k Kalman on/off, space pause, h heatmaps, c raw vs smoothed."""
    if key in (ord("q"), 27):
        state.quit = True
    elif key == ord("k"):
        pipeline.kalman = not pipeline.kalman
    elif key == ord(" "):
        state.paused = not state.paused
    elif key == ord("h"):
        state.heatmaps = not state.heatmaps
    elif key == ord("c"):
        state.compare = not state.compare


def render(frame: np.ndarray, result: FrameResult, state: ViewState, kalman: bool, fps: float,
           threshold: float) -> np.ndarray:
    """Draw one frame's people, boxes, status line and optional heatmap panel on a copy of frame."""
    canvas = frame.copy()
    for person in result.people:
        draw.draw_box(canvas, person.box, person.track_id)
        scores = np.where(person.visible, np.maximum(person.scores, threshold), 0.0) if kalman else person.scores
        if state.compare:
            draw.draw_comparison(canvas, person.raw_keypoints, person.smoothed_keypoints, person.scores,
                                 threshold=threshold)
        else:
            keypoints = person.smoothed_keypoints if kalman else person.raw_keypoints
            draw.draw_pose(canvas, keypoints, scores, threshold=threshold)
    stages = " ".join(f"{name} {ms:.0f}" for name, ms in result.timings_ms.items())
    draw.draw_status(canvas, [
        f"{fps:.1f} FPS  people {len(result.people)}  kalman {'on' if kalman else 'off'}",
        f"ms: {stages}",
    ])
    if state.heatmaps and result.heatmaps is not None and len(result.heatmaps):
        panel = draw.heatmap_panel(result.heatmaps, (canvas.shape[1] // 3, canvas.shape[0] // 3))
        ph, pw = panel.shape[:2]
        canvas[-ph:, -pw:] = panel
    return canvas


def person_json(person) -> dict:
    """One tracked person in the JSON output's format (app.outputs), with its visible flags."""
    record = person_record(person.box, person.box_score, person.keypoints, person.scores, person.track_id)
    record["visible"] = [bool(v) for v in person.visible]
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


def _inference(pipeline: PosePipeline, frames: queue.Queue, results: queue.Queue, stop: threading.Event,
               want_heatmaps: threading.Event, independent: bool, smoothing=None) -> None:
    """independent: frames are unrelated images (a folder), so nothing is tracked or smoothed across them.
    smoothing: None (the pipeline's live smoothing) or an app.offline.FixedLagStage, whose pairs come
    out a fixed number of frames late with offline-smoothed keypoints; flushed when the input ends."""

    def put(pair) -> None:
        while not stop.is_set():
            try:
                results.put(pair, timeout=0.1)
                return
            except queue.Full:
                pass

    try:
        while not stop.is_set():
            try:
                item = frames.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _END or isinstance(item, BaseException):
                for pair in smoothing.flush() if smoothing is not None else ():
                    put(pair)  # the frames still held back: every input frame is written once
                results.put(item)
                return
            if independent:
                pipeline.reset()
            result = pipeline.process(item.image, want_heatmaps=want_heatmaps.is_set())
            for pair in smoothing.push(item, result) if smoothing is not None else [(item, result)]:
                put(pair)
    except BaseException as error:  # a thread that dies silently would leave the main thread waiting forever
        try:  # the frames the offline stage still holds were processed: they reach the outputs first
            for pair in smoothing.flush() if smoothing is not None else ():
                put(pair)
        finally:
            results.put(error)


def check_outputs(options: DemoOptions) -> tuple[Path | None, Path | None]:
    """Fails before any work when an output cannot be written (missing folder, read-only, exists)."""
    video_path = check_output_path(options.output, options.overwrite) if options.output else None
    json_path = check_output_path(options.json, options.overwrite) if options.json else None
    return video_path, json_path


def run(options: DemoOptions, pipeline: PosePipeline, source, show: bool) -> int:
    """Runs the demo on an opened source until it ends or the user quits; returns frames processed.

    Raises the first error a stage met (after closing the outputs), KeyboardInterrupt on Ctrl-C.
    """
    video_path, json_path = check_outputs(options)
    live = bool(getattr(source, "is_live", False))
    video = VideoOutput(video_path, fps=source.fps or 25.0) if video_path else None
    width, height = source.size
    json_out = (JsonOutput(json_path, source=str(options.source), fps=source.fps, width=width, height=height)
                if json_path else None)

    frames: queue.Queue = queue.Queue(maxsize=1 if live else 8)
    results: queue.Queue = queue.Queue(maxsize=4)
    stop = threading.Event()
    want_heatmaps = threading.Event()
    threads = [
        threading.Thread(target=_reader, args=(source, frames, stop, live), daemon=True, name="reader"),
        threading.Thread(target=_inference, args=(pipeline, frames, results, stop, want_heatmaps,
                                                    getattr(source, "kind", "") == "images",
                                                    offline_stage(options.smoothing, source, video_path or json_path)),
                         daemon=True, name="inference"),
    ]
    state = ViewState()
    progress = _progress_bar(options, source, live)
    count = 0
    fps = 0.0
    last = time.perf_counter()
    try:
        for thread in threads:
            thread.start()
        while not state.quit:
            try:
                item = results.get(timeout=0.1)
            except queue.Empty:
                if show:
                    handle_key(cv2.waitKey(1) & 0xFF, state, pipeline)
                continue
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            frame, result = item
            now = time.perf_counter()
            fps = 0.9 * fps + 0.1 / max(now - last, 1e-6) if count else 1.0 / max(now - last, 1e-6)
            last = now
            canvas = render(frame.image, result, state, pipeline.kalman, fps, options.threshold)
            if video is not None:
                video.write(canvas)
            if json_out is not None:
                json_out.write_frame(frame.index, frame.timestamp_s, [person_json(p) for p in result.people])
            count += 1
            if progress is not None:
                progress.update(1)
            if show:
                cv2.imshow(WINDOW, canvas)
                handle_key(cv2.waitKey(1) & 0xFF, state, pipeline)
                while state.paused and not state.quit:
                    handle_key(cv2.waitKey(50) & 0xFF, state, pipeline)
                if state.heatmaps:
                    want_heatmaps.set()
                else:
                    want_heatmaps.clear()
            if options.max_frames is not None and count >= options.max_frames:
                break
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=1.0)
        source.close()
        if video is not None:
            video.close()
        if json_out is not None:
            json_out.close()
        if progress is not None:
            progress.close()
        if show:
            cv2.destroyAllWindows()
    return count


def _progress_bar(options: DemoOptions, source, live: bool):
    if live or not options.progress:
        return None
    from tqdm import tqdm

    total = getattr(source, "frame_count", None)
    return tqdm(total=total, unit="frame", desc=Path(str(options.source)).name, leave=True)
