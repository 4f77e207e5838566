"""What drawing the window's view costs: app.views.compose_view at the window's size (now) against
the view drawn at the source's size and left to the window to scale (before issue 20), for two
source sizes and three views, alternated in one run. Synthetic frame and people (no network).

    .venv/bin/python -m benchmarks.view_compose [--old path/to/old_views.py] [--repeats 30]
        [--window 1920x1080] [--cv2-threads 2]

--old: a copy of the former app/views.py (git show 853a58f:app/views.py > old_views.py); without
it only the new path is timed. The old path's scaling in the window (Qt) is not included.
"""

import argparse
import importlib.util
import sys
import time

import cv2
import numpy as np

from app import views
from app.pipeline import FrameResult, Person
from app.skeleton import KEYPOINT_NAMES

K = len(KEYPOINT_NAMES)


def scene(width: int, height: int) -> tuple[np.ndarray, FrameResult]:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (height, width, 3), np.uint8)
    people = []
    for i in range(3):
        x, y, s = width * (0.2 + 0.3 * i), height * 0.2, height / 10
        points = np.stack([x + rng.normal(0, s, K), y + np.linspace(0, 6 * s, K)], axis=1).astype(np.float32)
        people.append(Person(track_id=i + 1, box=np.array([x - 2 * s, y - s, x + 2 * s, y + 7 * s], np.float32),
                             box_score=0.9, raw_keypoints=points, smoothed_keypoints=points + 1,
                             scores=np.full(K, 0.9, np.float32), visible=np.ones(K, bool), kalman=True))
    heatmaps = rng.random((3, 64, 48, K), np.float32)
    return frame, FrameResult(people=people, detected=True, timings_ms={"detect": 10.0}, heatmaps=heatmaps)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old", default=None)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--window", default="1280x720", help="the window's size, WIDTHxHEIGHT")
    parser.add_argument("--cv2-threads", type=int, default=1, help="cv2.setNumThreads (the product leaves "
                        "OpenCV's default, all cores)")
    args = parser.parse_args()
    cv2.setNumThreads(args.cv2_threads)
    old = None
    if args.old:
        spec = importlib.util.spec_from_file_location("old_views", args.old)
        old = sys.modules["old_views"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
        spec.loader.exec_module(old)
    window = tuple(int(v) for v in args.window.lower().split("x"))
    states = {"plain": dict(), "heatmaps": dict(heatmaps=True), "side by side": dict(compare="side")}
    print(f"| source | view | now: at {window[0]}x{window[1]} (ms, best of {args.repeats}) | before: at the source's size (ms, best of {args.repeats}) |")
    print("|---|---|---|---|")
    for width, height in ((640, 360), (1920, 1080)):
        frame, result = scene(width, height)
        for name, fields in states.items():
            new_ms, old_ms = [], []
            for _ in range(args.repeats):  # alternated, so both see the same load
                t0 = time.perf_counter()
                views.compose_view(frame, result, views.ViewState(**fields), True, 10.0, 0.3, "", window)
                new_ms.append((time.perf_counter() - t0) * 1000)
                if old is not None:
                    t0 = time.perf_counter()
                    annotated = old.annotate(frame, result, old.ViewState(**fields), True, 0.3)
                    old.compose_view(annotated, frame, result, old.ViewState(**fields), True, 10.0, 0.3, "")
                    old_ms.append((time.perf_counter() - t0) * 1000)
            before = f"{np.min(old_ms):.1f}" if old_ms else "not run"
            print(f"| {width}x{height} | {name} | {np.min(new_ms):.1f} | {before} |")


if __name__ == "__main__":
    main()
