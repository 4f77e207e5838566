"""Track ids when the pose model's keypoints are noise: how boxes are carried between detector frames.

    python -m benchmarks.box_carry --threads 2

Between detector runs (`PipelineConfig.detect_every`, default 8) the pipeline carries each tracked
person's box to the next frame. Before issue 17 the box always followed the person's smoothed
keypoints; with keypoints that are noise the carried boxes drift off their people, the tracker
loses them and the next detection starts new ids. This script counts the distinct track ids on
real videos with the shared LiteRT detector and pose models whose keypoints carry no information:

  noise        random heatmaps (uniform in [0, 1), a fresh draw per crop and frame) through the
               product's crops and DARK decode: every joint "confident" (peak ~1) and wrong.
  random R50   SimpleBaseline R50 with random weights at 128 x 96 (Keras, ONNX Runtime on the CPU),
               as a user without trained weights runs it (`--random-r50`, slower).

Runs per video and model: the detector on every frame (detect_every=1), the default schedule with
the keypoint carry it had before (`KeypointCarryPipeline`, the old `_derive_next_boxes` kept here),
and the default schedule with the product's carry now. The detector runs once per frame; its boxes
are replayed to every run (`benchmarks.detect_schedule.ReplayDetector`), so all see the same boxes.
"""

import argparse
import os
import platform
import time
from pathlib import Path

import app  # noqa: F401  (first: keeps triton out, see app/__init__.py)

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")

import numpy as np  # noqa: E402

from app.pipeline import PipelineConfig, PosePipeline  # noqa: E402
from app.pose import PoseConfig, PoseEstimator  # noqa: E402
from app.tracker import boxes_from_keypoints  # noqa: E402
from benchmarks.detect_schedule import DETECTOR, ReplayDetector, detect_all, read_frames  # noqa: E402
from benchmarks.machine import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
VIDEOS = {"street": (ASSETS / "videos" / "street.avi", [(0, 205)]),
          "dancer": (ASSETS / "videos" / "dancer.avi", [(0, 400), (700, 900)])}


class NoiseRunner:
    """A pose 'model' whose heatmaps are uniform noise: (N, H, W, 3) -> (N, 64, 48, 17), seeded."""

    input_size = (256, 192)

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.rng.random((len(batch), 64, 48, 17), dtype=np.float32)


def random_r50_runner(threads: int | None):
    """SimpleBaseline R50 with random weights at 128 x 96 through the product's runtime."""
    import keras

    from app.runtime import runner_from_model
    from models.simple_baseline import build_simple_baseline

    keras.utils.set_random_seed(0)
    runner = runner_from_model(build_simple_baseline(depth=50, num_joints=17, input_size=(128, 96)),
                               runtime="onnx", threads=threads, device="cpu")
    runner.input_size = (128, 96)
    return runner


class KeypointCarryPipeline(PosePipeline):
    """The carry before issue 17: every box follows its person's smoothed keypoints (size of the last
    detector box, moved as the keypoint box moved since), however unsure those keypoints are."""

    def _derive_next_boxes(self, people, shape, detected):
        if not people:
            self._anchors = {}
            self._next_boxes = np.zeros((0, 4), np.float32)
            self._next_scores = np.zeros((0,), np.float32)
            return
        keypoints = np.stack([p.smoothed_keypoints for p in people])
        scores = np.stack([np.where(p.visible, p.scores, 0.0) for p in people]).astype(np.float32)
        derived = np.asarray(boxes_from_keypoints(keypoints, scores, threshold=self.config.keypoint_threshold),
                             np.float32).reshape(-1, 4)
        if detected:
            self._anchors = {p.track_id: (p.box.copy(), derived[i]) for i, p in enumerate(people)
                             if np.isfinite(derived[i]).all()}
        boxes = derived.copy()
        for i, person in enumerate(people):
            anchor = self._anchors.get(person.track_id)
            if anchor is not None and np.isfinite(derived[i]).all():
                detector_box, derived_then = anchor
                shift = (derived[i, :2] + derived[i, 2:]) / 2 - (derived_then[:2] + derived_then[2:]) / 2
                boxes[i] = detector_box + np.concatenate([shift, shift])
        height, width = shape[:2]
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width - 1)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height - 1)
        usable = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] - boxes[:, 0] > 4) & (boxes[:, 3] - boxes[:, 1] > 4)
        self._next_boxes = boxes[usable]
        self._next_scores = np.array([p.box_score for p in people], np.float32)[usable]


def count_ids(pipeline, replay: ReplayDetector, video: Path, segments) -> dict:
    """Distinct ids (per segment, summed), detector calls per frame, people per frame."""
    ids, frames, people, segment_seen = set(), 0, 0, None
    pipeline.detector_calls = 0
    for segment, index, frame in read_frames(video, segments):
        if segment != segment_seen:
            pipeline.reset()
            segment_seen = segment
        replay.frame_index = index
        result = pipeline.process(frame)
        ids.update((segment, p.track_id) for p in result.people)
        frames += 1
        people += len(result.people)
    return {"ids": len(ids), "det/frame": pipeline.detector_calls / frames, "people/frame": people / frames}


def detections(detector_path: str, threads: int | None, name: str, cache: Path) -> tuple[dict, dict]:
    video, segments = VIDEOS[name]
    path = cache / f"{name}_{'_'.join(f'{a}-{b}' for a, b in segments)}.npz"
    if path.exists():
        data = np.load(path)
        frames = sorted({int(k.split('_')[1]) for k in data.files})
        return ({i: data[f"boxes_{i}"] for i in frames}, {i: data[f"scores_{i}"] for i in frames})
    from app.detector import DetectorConfig, PersonDetector

    detector = PersonDetector(DetectorConfig(model=detector_path, threads=threads))
    boxes, scores, _ = detect_all(detector, video, segments)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"boxes_{i}": b for i, b in boxes.items()}, **{f"scores_{i}": s for i, s in scores.items()})
    return boxes, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", nargs="+", default=list(VIDEOS), choices=list(VIDEOS))
    parser.add_argument("--detector", default=str(DETECTOR))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--random-r50", action="store_true", help="also the random-weight R50 (slower)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/box_carry_detections"),
                        help="where the detector's boxes are kept between runs")
    args = parser.parse_args()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"load average at start {os.getloadavg()[0]:.1f}")
    models = [("noise", lambda: NoiseRunner(0))]
    if args.random_r50:
        models.append(("random R50", lambda: random_r50_runner(args.threads)))
    print("| video | pose model | run | ids | det/frame | people/frame |")
    print("|---|---|---|---:|---:|---:|")
    for name in args.videos:
        video, segments = VIDEOS[name]
        boxes, scores = detections(args.detector, args.threads, name, args.cache)
        for label, make_runner in models:
            runner = make_runner()
            runs = [("detector every frame", PosePipeline, PipelineConfig(detect_every=1)),
                    ("default, keypoint carry (before)", KeypointCarryPipeline, PipelineConfig()),
                    ("default, carry now", PosePipeline, PipelineConfig())]
            for run, make, config in runs:
                replay = ReplayDetector(boxes, scores)
                if isinstance(runner, NoiseRunner):
                    runner.rng = np.random.default_rng(0)  # the same noise for every run
                t0 = time.perf_counter()
                stats = count_ids(make(replay, PoseEstimator(runner, PoseConfig()), config), replay, video, segments)
                print(f"| {name} | {label} | {run} | {stats['ids']} | {stats['det/frame']:.3f} | "
                      f"{stats['people/frame']:.1f} |  ({time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f})",
                      flush=True)


if __name__ == "__main__":
    main()
