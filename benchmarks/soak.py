"""Soak test: many synthetic frames with people entering and leaving, through the real pipeline.

    python -m benchmarks.soak --frames 20000

Everything but the two networks is real: crops, decoding, tracker, Kalman filters, drawing, the
video and JSON writers. The detector is replaced by the scene's true boxes and the pose network by a
cheap runner that finds the painted person in each crop and draws a Gaussian per joint, so 20,000 frames take minutes, not hours. It reports
the resident memory slope after warm-up, the largest track table, and the frame time early and late.
`tests/test_soak.py` runs a shorter form and asserts the memory and table bounds.
"""

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from app.demo import person_json
from app.views import ViewState, render
from app.outputs import JsonOutput, VideoOutput
from app.pipeline import PipelineConfig, PosePipeline
from app.pose import PoseConfig, PoseEstimator

K = 17
PERSON_BGR = (90, 160, 220)  # the colour the scene paints people in
# A standing person's joints in a unit box (x, y), roughly COCO-like.
UNIT_POSE = np.array([
    [0.5, 0.08], [0.55, 0.06], [0.45, 0.06], [0.6, 0.08], [0.4, 0.08],
    [0.7, 0.25], [0.3, 0.25], [0.8, 0.42], [0.2, 0.42], [0.85, 0.58], [0.15, 0.58],
    [0.62, 0.6], [0.38, 0.6], [0.63, 0.8], [0.37, 0.8], [0.64, 0.98], [0.36, 0.98],
], np.float32)


class PaintedPersonRunner:
    """Stands in for the network: finds the painted person in each crop and draws a Gaussian at each
    of its joints, so keypoints follow the person as a trained model's would, at a fraction of the cost."""

    input_size = (256, 192)
    name = "painted-person"

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        ys, xs = np.mgrid[0:64, 0:48].astype(np.float32)
        self.xs, self.ys = xs[..., None], ys[..., None]
        mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
        self.person_rgb = ((np.array(PERSON_BGR[::-1]) / 255 - mean) / std).astype(np.float32)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        heatmaps = np.zeros((len(batch), 64, 48, K), np.float32)
        for i, crop in enumerate(batch[:, ::4, ::4]):  # the heatmap grid: every 4th input pixel
            mask = (np.abs(crop - self.person_rgb).max(axis=-1) < 0.1).astype(np.uint8)
            count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask)
            if count < 2:
                continue
            # Like a top-down network, attend to the person centred in the crop, not the neighbours.
            nearest = 1 + int(np.argmin(np.linalg.norm(centroids[1:] - [24, 32], axis=1)))
            x, y, w, h = stats[nearest, :4]
            lo = np.array([x, y], np.float32)
            hi = np.array([x + w - 1, y + h - 1], np.float32)
            joints = lo + UNIT_POSE * (hi - lo) + self.rng.normal(0, 0.3, (K, 2)).astype(np.float32)
            d2 = (self.xs - joints[:, 0]) ** 2 + (self.ys - joints[:, 1]) ** 2
            heatmaps[i] = 0.9 * np.exp(-d2 / 8.0)
        return heatmaps


@dataclass
class Walker:
    x: float
    y: float
    vx: float
    w: float
    h: float

    def box(self) -> np.ndarray:
        return np.array([self.x, self.y, self.x + self.w, self.y + self.h], np.float32)


class Scene:
    """People walking across a frame in lanes, one at a time per lane; they enter at random and
    are gone once they leave. Lanes keep painted people apart: the soak measures state and memory,
    not how a crowd is untangled (benchmarks/detect_schedule.py measures that on real video)."""

    def __init__(self, width: int, height: int, max_people: int, seed: int = 0):
        self.width, self.height, self.max_people = width, height, max_people
        self.rng = np.random.default_rng(seed)
        self.lanes: list[Walker | None] = [None] * max_people

    @property
    def walkers(self) -> list[Walker]:
        return [w for w in self.lanes if w is not None]

    def step(self) -> None:
        lane_h = self.height / self.max_people
        for lane, walker in enumerate(self.lanes):
            if walker is not None:
                walker.x += walker.vx
                if not -walker.w < walker.x < self.width:
                    self.lanes[lane] = None
            elif self.rng.random() < 0.02:
                h = float(self.rng.uniform(0.6, 0.95) * lane_h)
                w = h * 0.4
                leftward = self.rng.random() < 0.5
                self.lanes[lane] = Walker(
                    x=self.width - 1.0 if leftward else 1.0 - w, y=lane * lane_h + (lane_h - h) / 2,
                    vx=float(self.rng.uniform(1, 4)) * (-1 if leftward else 1), w=w, h=h)

    def render(self) -> np.ndarray:
        frame = np.full((self.height, self.width, 3), 40, np.uint8)
        for walker in self.walkers:
            x1, y1, x2, y2 = walker.box().round().astype(int)
            frame[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = PERSON_BGR
        return frame

    def boxes(self) -> tuple[np.ndarray, np.ndarray]:
        boxes = np.array([w.box() for w in self.walkers], np.float32).reshape(-1, 4)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, self.width - 1)
        visible = boxes[:, 2] - boxes[:, 0] >= 4  # a detector does not see a sliver at the edge
        return boxes[visible], np.full(int(visible.sum()), 0.9, np.float32)


class SceneDetector:
    def __init__(self, scene: Scene):
        self.scene = scene

    def detect(self, frame):
        return self.scene.boxes()


def resident_mb() -> float:
    """Resident set size of this process in MB (Linux /proc; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def soak(frames: int, width: int = 480, height: int = 480, max_people: int = 4, warmup: int = 500,
         sample_every: int = 100, out_dir: Path | None = None, seed: int = 0) -> dict:
    """Runs `frames` frames; returns memory samples, the slope after warm-up and table sizes."""
    scene = Scene(width, height, max_people, seed)
    pipeline = PosePipeline(SceneDetector(scene), PoseEstimator(PaintedPersonRunner(seed), PoseConfig()),
                            PipelineConfig(detect_every=4))
    state = ViewState()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(out_dir or tmp)
        video = VideoOutput(folder / "soak.avi", fps=25.0)
        json_out = JsonOutput(folder / "soak.json", source="synthetic", fps=25.0, width=width, height=height)
        samples, frame_ms, max_tracks, max_smoothers = [], [], 0, 0
        try:
            for index in range(frames):
                start = time.perf_counter()
                scene.step()
                frame = scene.render()
                result = pipeline.process(frame)
                video.write(render(frame, result, state, pipeline.kalman, 25.0, 0.3))
                json_out.write_frame(index, index / 25.0, [person_json(p, 0.3) for p in result.people])
                frame_ms.append((time.perf_counter() - start) * 1000)
                sizes = pipeline.state_size()
                max_tracks = max(max_tracks, sizes["tracks"])
                max_smoothers = max(max_smoothers, sizes["smoothers"])
                if index % sample_every == 0:
                    samples.append((index, resident_mb()))
        finally:
            video.close()
            json_out.close()
    late = np.array([s for s in samples if s[0] >= warmup])
    slope = float(np.polyfit(late[:, 0], late[:, 1], 1)[0] * 1000) if len(late) >= 3 else float("nan")
    quarter = max(len(frame_ms) // 4, 1)
    return {
        "frames": frames, "rss_samples": samples, "rss_slope_mb_per_1000_frames": slope,
        "rss_start_mb": samples[0][1], "rss_end_mb": samples[-1][1],
        "max_tracks": max_tracks, "max_smoothers": max_smoothers, "max_people": max_people,
        "frame_ms_first_quarter": float(np.median(frame_ms[warmup:warmup + quarter] or frame_ms[:quarter])),
        "frame_ms_last_quarter": float(np.median(frame_ms[-quarter:])),
        "detector_calls_per_frame": pipeline.detector_calls / frames,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--max-people", type=int, default=4)
    args = parser.parse_args(argv)
    report = soak(args.frames, max_people=args.max_people)
    print(f"frames {report['frames']}, people at most {report['max_people']} on screen")
    print(f"resident memory {report['rss_start_mb']:.1f} MB -> {report['rss_end_mb']:.1f} MB, "
          f"slope after warm-up {report['rss_slope_mb_per_1000_frames']:+.3f} MB per 1000 frames")
    print(f"largest track table {report['max_tracks']}, smoothers {report['max_smoothers']}")
    print(f"frame time median {report['frame_ms_first_quarter']:.2f} ms (first quarter after warm-up) -> "
          f"{report['frame_ms_last_quarter']:.2f} ms (last quarter)")


if __name__ == "__main__":
    main()
