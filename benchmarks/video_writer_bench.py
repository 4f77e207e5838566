"""The output video writer (issue 21): app.outputs.VideoOutput (PyAV) against OpenCV's writer.

    .venv/bin/python -m benchmarks.video_writer_bench --video ../shared/assets/videos/dancer.avi --frames 200

For each writer: milliseconds per frame (median of the rounds; the writers alternate within a
round so a change in the machine's load hits all of them alike), bytes per frame, frames OpenCV
decodes back from a closed file, and from a file whose writer was killed (SIGKILL) half-way.
Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def read_frames(video: Path, count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def write_opencv(path: Path, frames: list[np.ndarray], fourcc: str, fps: float) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()


def write_ours(path: Path, frames: list[np.ndarray], fps: float) -> None:
    from app.outputs import VideoOutput

    with VideoOutput(path, fps=fps) as video:
        for frame in frames:
            video.write(frame)


WRITERS = {
    "OpenCV mp4v (.mp4, before)": ("mp4", lambda p, f, fps: write_opencv(p, f, "mp4v", fps)),
    "OpenCV MJPG (.avi, before)": ("avi", lambda p, f, fps: write_opencv(p, f, "MJPG", fps)),
    "PyAV H.264 fragmented (.mp4, now)": ("mp4", write_ours),
    "PyAV MJPEG (.avi, now)": ("avi", write_ours),
}


def decoded(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def _write_then_die(name: str, video: str, count: int, out: str) -> None:
    """In a child process: hand `count` frames to the writer, then SIGKILL ourselves (no close)."""
    frames = read_frames(Path(video), count)
    if "OpenCV" in name:
        height, width = frames[0].shape[:2]
        writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*("mp4v" if "mp4v" in name else "MJPG")), 25.0,
                                 (width, height))
        for frame in frames:
            writer.write(frame)
    else:
        from app.outputs import VideoOutput

        video_out = VideoOutput(out, fps=25.0)
        for frame in frames:
            video_out.write(frame)
    os.kill(os.getpid(), signal.SIGKILL)


def killed_run(name: str, video: Path, frames: int, folder: Path) -> tuple[int, int]:
    """(frames handed to the writer, frames OpenCV decodes) when the writer is SIGKILLed."""
    out = folder / f"killed.{WRITERS[name][0]}"
    out.unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "benchmarks.video_writer_bench", "--die", name, "--video", str(video),
                    "--frames", str(frames), "--out", str(out)],
                   cwd=Path(__file__).resolve().parents[1], check=False)
    return frames, decoded(out) if out.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--die", help=argparse.SUPPRESS)  # the child of killed_run
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.die:
        _write_then_die(args.die, str(args.video), args.frames, args.out)
    frames = read_frames(args.video, args.frames)
    height, width = frames[0].shape[:2]
    times: dict[str, list[float]] = {name: [] for name in WRITERS}
    sizes: dict[str, int] = {}
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for _ in range(args.rounds):
            for name, (suffix, write) in WRITERS.items():
                path = folder / f"out.{suffix}"
                path.unlink(missing_ok=True)
                start = time.perf_counter()
                write(path, frames, 25.0)
                times[name].append((time.perf_counter() - start) / len(frames) * 1000)
                sizes[name] = path.stat().st_size
                counts[name] = decoded(path)
        killed = {name: killed_run(name, args.video, len(frames), folder) for name in WRITERS}
    load = os.getloadavg()
    print(f"{len(frames)} frames of {args.video.name} ({width}x{height}), {args.rounds} rounds; "
          f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; {os.cpu_count()} CPUs\n")
    print("| writer | ms / frame (median) | kB / frame | frames read back (closed) | frames read back after SIGKILL |")
    print("|---|---|---|---|---|")
    for name in WRITERS:
        given, back = killed[name]
        print(f"| {name} | {statistics.median(times[name]):.2f} | {sizes[name] / len(frames) / 1000:.1f} | "
              f"{counts[name]} / {len(frames)} | {back} / {given} |")


if __name__ == "__main__":
    main()
