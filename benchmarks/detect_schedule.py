"""Detector calls per frame and recall of the pipeline's detector schedule, against the detector on every frame.

    python -m benchmarks.detect_schedule --threads 2 --write docs/detect_schedule.md

`app.pipeline.PosePipeline` runs the person detector every `detect_every` frames, as soon as a
track's keypoints turn weak (`min_track_score`), and when no one is tracked; in between, each
person's box is derived from their last smoothed keypoints. This script measures what that costs
in people found, on real videos (street.avi: all 205 frames; dancer.avi: frames 0-399 and
700-899, each segment started afresh):

  reference  the product with the detector on every frame (detect_every=1): the detector boxes its
             tracker takes as people (new people only from boxes scoring >= TrackerConfig.min_new_score,
             weaker boxes, down to DetectorConfig.conf, only keep a person). The detector runs
             once per frame in total: its boxes are replayed (`ReplayDetector`) to the reference
             and to every run below, which all see the very same detections.
  N=1        the same every-frame run again, as a check of the metrics (recall 1 by construction).
  N=4/8/16   the pipeline's schedule at those `detect_every`, default `min_track_score`.
  N=8 ...=0  the weak-track trigger off: what the trigger buys.
  N=8 +edge  prototype trigger (`EdgeTriggerPipeline`): detect also while a tracked box touches
             the frame border, where people walk in and out.
  N=8 old rule  the box rule before the size lock (`KeypointExtentPipeline`): between detections a
             person's box is their keypoints' extent instead of their last detector box's size
             moved with their keypoints, which the product does now.

Metrics, per run over all frames (a frame's "tracked boxes" are the `Person.box`es it returns):
  det/frame  detector calls / frames.
  recall     reference boxes matched one-to-one (Hungarian on IoU) by a tracked box with IoU >= 0.5
             (and >= 0.3), over all reference boxes; also over the reference boxes scoring >= 0.5.
  precision  tracked boxes so matched (IoU >= 0.5), over all tracked boxes.
  idsw       identity switches against the reference tracks (the IoU tracker on the reference
             boxes): a reference track matched (IoU >= 0.5) to a different pipeline id than the
             last time it was matched, MOT-style. `ids`: distinct pipeline ids.
  misses     reference boxes not matched at IoU >= 0.5, split by cause: `new` whose reference
             track began after the run's last detector call (it entered, or was first seen, since);
             `never` a reference person there at a detector call whom this run has never followed
             (at its detector calls their box was too weak to start a person); `lost` a person
             this run followed before and no longer does (their box went astray, or was dropped).
  crops      person crops the pose model is asked for per frame (the weak-track trigger asks twice
             on the frames where it fires: derived boxes, then detector boxes).

The pose model: the product's SimpleBaseline has no trained weights on this machine and the
schedule depends on real keypoints and confidences, so `CropPoseEstimator` stands in for it:
YOLO11n-pose (LiteRT int8, 256 x 256, ../shared/assets/peers/) run on the same padded crops the
product cuts. It replaces SimpleBaseline for this measurement only. Its keypoint confidences are
sigmoid outputs rather than heatmap peaks, so `min_track_score` means roughly, not exactly, what
it means in the product.
"""

import argparse
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import app  # noqa: F401  (first: keeps triton out, see app/__init__.py)
from benchmarks.machine import cpu_model  # noqa: E402

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402

from app.crop import boxes_to_center_scale, crop_transforms, finite_boxes, transform_points, warp_crops  # noqa: E402
from app.pipeline import PipelineConfig, PosePipeline  # noqa: E402
from app.pose import PoseResult  # noqa: E402
from app.skeleton import NUM_KEYPOINTS  # noqa: E402
from app.tracker import box_iou, boxes_from_keypoints  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
DETECTOR = ASSETS / "detector" / "yolov8n_int8.tflite"
POSE_MODEL = ASSETS / "peers" / "yolo11n-pose_int8.tflite"
COCO_ANNOTATIONS = ASSETS / "coco" / "annotations" / "person_keypoints_val2017_subset.json"
COCO_IMAGES = ASSETS / "coco" / "images"
VIDEOS = {
    # name: (path, frame segments [start, stop)); each segment starts the pipeline afresh.
    "street": (ASSETS / "videos" / "street.avi", [(0, 205)]),
    # Frames 0-400: standing still (0-60), then dancing from ~200; 700-900: fast dancing, with the
    # sudden arm movement of frames 758-759 (docs/smoothing.md).
    "dancer": (ASSETS / "videos" / "dancer.avi", [(0, 400), (700, 900)]),
}
# Detector score from which a reference person is clearly seen (the tracker's min_new_score too):
# the street's crowd has many weak boxes that come and go from frame to frame, so recall is also
# given over the clearly seen people alone.
CONFIDENT = 0.5
CROP_SIZE = (256, 192)  # (H, W): the product's model input, so the crops are the product's crops
MARKERS = ("<!-- detect_schedule:begin -->", "<!-- detect_schedule:end -->")


# --------------------------------------------------------------------------------------------
# The stand-in pose model


class CropPoseEstimator:
    """YOLO11n-pose on the product's person crops: `estimate(frame, boxes)` like app.pose.PoseEstimator.

    For each box (N, 4) xyxy the crop is cut as the product cuts it (1.25 padding, 3:4 aspect,
    256 x 192, app.crop), padded to the model's 256 x 256 square, and run through the model; of its
    1344 candidate people, the one kept maximises (IoU of its box with the crop's own box) x (its
    mean keypoint confidence); its keypoints are mapped back to image pixels. A non-finite box, or
    no candidate overlapping the crop's box: zero scores, which the pipeline reads as a weak track.

    Why not `ultralytics.YOLO(path).predict`: in this int8 export the person-score channel is
    broken (0.04 on the anchors that box a clear, centred skier, 1.0 on empty corners of
    letterboxed images), so Ultralytics' score threshold and NMS find no one or the wrong box.
    The boxes, keypoints and keypoint confidences of the same output are sound (`coco_check`: OKS
    AP 0.46 on the shared COCO people with their annotated boxes), so this class reads the raw
    output through the LiteRT interpreter Ultralytics itself uses, and picks the person without
    that channel.
    """

    PAD_VALUE = 114  # the grey Ultralytics letterboxes with, which the model was trained on

    def __init__(self, model: str | Path = POSE_MODEL, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(str(model), num_threads=threads or os.cpu_count() or 1)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        _, self.model_height, self.model_width, _ = (int(v) for v in self._input["shape"])
        self.calls = 0  # crops run through the model

    def _run(self, crop_bgr: np.ndarray) -> np.ndarray:
        """One (256, 192, 3) crop -> (56, A) candidates: box cx, cy, w, h, (broken) score, then
        17 x (x, y, confidence), in crop pixels."""
        pad = (self.model_width - CROP_SIZE[1]) // 2
        square = np.full((self.model_height, self.model_width, 3), self.PAD_VALUE, np.uint8)
        square[:, pad:pad + CROP_SIZE[1]] = crop_bgr
        batch = (square[None, ..., ::-1] / np.float32(255)).astype(np.float32)  # RGB in [0, 1], as Ultralytics
        self._interpreter.set_tensor(self._input["index"], batch)
        self._interpreter.invoke()
        out = self._interpreter.get_tensor(self._output["index"])[0].copy()
        # The export writes coordinates as fractions of the input size (Ultralytics' LiteRT backend
        # scales them back the same way).
        out[[0, 2]] *= self.model_width
        out[[1, 3]] *= self.model_height
        out[5::3] = out[5::3] * self.model_width - pad
        out[6::3] *= self.model_height
        out[0] -= pad
        return out

    def estimate(self, frame: np.ndarray, boxes: np.ndarray, return_heatmaps: bool = False) -> PoseResult:
        """frame uint8 BGR (H, W, 3), boxes (N, 4) -> PoseResult with keypoints (N, 17, 2) px, scores (N, 17)."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        n = len(boxes)
        keypoints = np.zeros((n, NUM_KEYPOINTS, 2), np.float32)
        scores = np.zeros((n, NUM_KEYPOINTS), np.float32)
        valid = finite_boxes(boxes)
        centers, sizes = boxes_to_center_scale(boxes, aspect_ratio=CROP_SIZE[1] / CROP_SIZE[0])
        forward, inverse = crop_transforms(centers, sizes, CROP_SIZE)
        rows = np.flatnonzero(valid)
        if len(rows):
            crops = warp_crops(frame, forward[rows], CROP_SIZE)
            # Where each crop's own box lies inside the crop: the person the crop was cut for.
            own_boxes = transform_points(boxes[rows].reshape(-1, 2, 2), forward[rows]).reshape(-1, 4)
            for row, crop, own_box in zip(rows, crops, own_boxes):
                # One crop per call: the export has a fixed batch of 1, and XNNPACK refuses to resize it.
                out = self._run(crop)
                self.calls += 1
                cx, cy, w, h = out[:4]
                candidates = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
                confidences = out[7::3]  # (17, A)
                fit = box_iou(own_box[None], candidates)[0] * confidences.mean(axis=0)
                best = int(np.argmax(fit))
                if fit[best] <= 0:
                    continue
                crop_points = np.stack([out[5::3, best], out[6::3, best]], axis=1)  # (17, 2)
                keypoints[row] = transform_points(crop_points[None], inverse[row][None])[0]
                scores[row] = confidences[:, best]
        return PoseResult(keypoints=keypoints, scores=scores, heatmaps=None, centers=centers.astype(np.float32),
                          sizes=sizes.astype(np.float32), valid=valid)


def coco_check(estimator) -> dict[str, float]:
    """OKS AP of the stand-in on the shared COCO people with their annotated boxes (app.evaluate):
    evidence that its keypoints are real, not a claim about SimpleBaseline."""
    from app.evaluate import evaluate

    stats, _ = evaluate(COCO_ANNOTATIONS, COCO_IMAGES, estimator, progress=False, quiet=True)
    return stats


class CachedEstimator:
    """Remembers each person's pose by (frame index, box): runs that detect on the same frame get the
    same detector boxes (though each keeps a different subset of them: the tracker decides which
    reach the pose model), so every crop is computed once. The caller sets `frame_index` per frame."""

    FIELDS = ("keypoints", "scores", "centers", "sizes", "valid")

    def __init__(self, estimator):
        self.estimator = estimator
        self.frame_index = -1
        self.crops = 0  # crops asked for, cached or not: the pose work the pipeline would do
        self._cache: dict[tuple[int, bytes], tuple] = {}

    def estimate(self, frame: np.ndarray, boxes: np.ndarray, return_heatmaps: bool = False) -> PoseResult:
        boxes = np.ascontiguousarray(boxes, np.float32).reshape(-1, 4)
        if not len(boxes):
            return self.estimator.estimate(frame, boxes)  # the estimator's own empty result
        keys = [(self.frame_index, box.tobytes()) for box in boxes]
        self.crops += len(boxes)
        missing = [i for i, key in enumerate(keys) if key not in self._cache]
        if missing:
            fresh = self.estimator.estimate(frame, boxes[missing])
            for row, i in enumerate(missing):
                self._cache[keys[i]] = tuple(getattr(fresh, name)[row] for name in self.FIELDS)
        columns = zip(*(self._cache[key] for key in keys))
        return PoseResult(heatmaps=None, **{name: np.stack(column) for name, column in zip(self.FIELDS, columns)})

    def forget_all_but_detections(self, detection_keys: set[tuple[int, bytes]]) -> None:
        """Drop the derived-box entries, which no later run asks for again (bounds the memory)."""
        self._cache = {key: value for key, value in self._cache.items() if key in detection_keys}


class NoPoseEstimator:
    """Zero keypoint scores for every box. For the every-frame run only: with detect_every=1 the
    tracked boxes are the detector's whatever the keypoints, so the pose model would change nothing."""

    def __init__(self):
        self.crops = 0  # crops the real model would have been asked for

    def estimate(self, frame: np.ndarray, boxes: np.ndarray, return_heatmaps: bool = False) -> PoseResult:
        n = len(np.asarray(boxes).reshape(-1, 4))
        self.crops += n
        zeros2 = np.zeros((n, 2), np.float32)
        return PoseResult(keypoints=np.zeros((n, NUM_KEYPOINTS, 2), np.float32),
                          scores=np.zeros((n, NUM_KEYPOINTS), np.float32), heatmaps=None,
                          centers=zeros2, sizes=zeros2, valid=np.ones(n, bool))


# --------------------------------------------------------------------------------------------
# The detector, run once per frame and replayed


class ReplayDetector:
    """Gives back the reference boxes of the current frame (`frame_index`, set by the caller)."""

    def __init__(self, boxes: dict[int, np.ndarray], scores: dict[int, np.ndarray]):
        self.boxes, self.scores = boxes, scores
        self.frame_index = -1

    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.boxes[self.frame_index], self.scores[self.frame_index]


def read_frames(path: Path, segments: list[tuple[int, int]]):
    """Yields (segment number, frame index, uint8 BGR frame) for the frames of each [start, stop)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SystemExit(f"cannot open {path}")
    try:
        index = 0
        for number, (start, stop) in enumerate(segments):
            while index < stop:
                ok, frame = capture.read()
                if not ok:
                    return
                if index >= start:
                    yield number, index, frame
                index += 1
    finally:
        capture.release()


def detect_all(detector, path: Path, segments) -> tuple[dict, dict, float]:
    """The detector on every selected frame: boxes {index: (N, 4)}, scores {index: (N,)}, mean ms."""
    boxes, scores, seconds = {}, {}, 0.0
    for _, index, frame in read_frames(path, segments):
        t0 = time.perf_counter()
        boxes[index], scores[index] = detector.detect(frame)
        seconds += time.perf_counter() - t0
    return boxes, scores, seconds / max(len(boxes), 1) * 1000


# --------------------------------------------------------------------------------------------
# The prototype trigger


@dataclass
class EdgePipelineConfig(PipelineConfig):
    # Detect also while a derived box reaches this close (pixels) to the frame border: people walk
    # in there, and a person half out of frame has few joints to derive a box from.
    edge_margin: float = 8.0


class EdgeTriggerPipeline(PosePipeline):
    """PosePipeline with one more reason to run the detector: a tracked box at the frame border."""

    def _should_detect(self) -> bool:
        if super()._should_detect():
            return True
        if self._frame_shape is None:
            return False
        height, width = self._frame_shape[:2]
        margin = self.config.edge_margin
        boxes = self._next_boxes
        near = ((boxes[:, 0] <= margin) | (boxes[:, 1] <= margin)
                | (boxes[:, 2] >= width - 1 - margin) | (boxes[:, 3] >= height - 1 - margin))
        return bool(near.any())


class KeypointExtentPipeline(PosePipeline):
    """The box rule before the size lock (commit dfce175): between detections a person's box is the
    extent of their keypoints (x 1.25), re-derived every frame. Kept to show what the size lock buys.
    Never telling the pipeline a frame was detected leaves it no detector box to keep the size of."""

    def _derive_next_boxes(self, people: list, shape: tuple[int, ...], detected: bool) -> None:
        super()._derive_next_boxes(people, shape, detected=False)


# --------------------------------------------------------------------------------------------
# Runs and metrics


@dataclass
class RunStats:
    label: str
    frames: int = 0
    detector_calls: int = 0
    reference_boxes: int = 0
    tracked_boxes: int = 0
    matched_50: int = 0
    matched_30: int = 0
    reference_confident: int = 0  # reference boxes with detector score >= CONFIDENT
    matched_confident: int = 0
    tracked_matched_50: int = 0
    id_switches: int = 0
    pipeline_ids: int = 0
    misses_new: int = 0
    misses_never: int = 0
    misses_lost: int = 0
    pose_crops: int = 0
    seconds: float = 0.0
    detected_frames: list[int] = field(default_factory=list)

    def row(self) -> dict:
        return {
            "run": self.label,
            "det/frame": self.detector_calls / max(self.frames, 1),
            "recall@0.5": self.matched_50 / max(self.reference_boxes, 1),
            "recall@0.3": self.matched_30 / max(self.reference_boxes, 1),
            f"recall@0.5 score>={CONFIDENT}": self.matched_confident / max(self.reference_confident, 1),
            "precision@0.5": self.tracked_matched_50 / max(self.tracked_boxes, 1),
            "idsw": self.id_switches,
            "ids": self.pipeline_ids,
            "miss new": self.misses_new,
            "miss never": self.misses_never,
            "miss lost": self.misses_lost,
            "crops/frame": self.pose_crops / max(self.frames, 1),
        }


def match(reference: np.ndarray, tracked: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """One-to-one pairs (reference row, tracked row) maximising total IoU, keeping IoU >= threshold."""
    if len(reference) == 0 or len(tracked) == 0:
        return []
    iou = box_iou(reference, tracked)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return [(r, c) for r, c in zip(rows, cols) if iou[r, c] >= threshold]


SEGMENT_ID_STRIDE = 1_000_000  # reference ids of segment k are k * this + the pipeline's id (it restarts at 1)


def reference_run(replay: ReplayDetector, video: Path, segments) -> tuple[dict, dict, dict, dict]:
    """The product with the detector on every frame (detect_every=1) over the replayed boxes.

    Its people are the reference: the detector runs at a low confidence (DetectorConfig.conf) and
    the tracker decides which boxes are people (new ones only from confident boxes, weak ones only
    to keep a person), so raw detector boxes are not what the every-frame product shows. The pose
    model is skipped: with detect_every=1 the boxes do not depend on the keypoints.
    Returns boxes {index: (M, 4)}, scores {index: (M,)}, ids {index: (M,)} unique across segments,
    and each id's first frame.
    """
    pipeline = PosePipeline(replay, NoPoseEstimator(), PipelineConfig(detect_every=1))
    boxes, scores, ids, first_seen = {}, {}, {}, {}
    segment_seen = None
    for segment, index, frame in read_frames(video, segments):
        if segment != segment_seen:
            pipeline.reset()
            segment_seen = segment
        replay.frame_index = index
        people = pipeline.process(frame).people
        boxes[index] = np.array([p.box for p in people], np.float32).reshape(-1, 4)
        scores[index] = np.array([p.box_score for p in people], np.float32)
        ids[index] = np.array([segment * SEGMENT_ID_STRIDE + p.track_id for p in people], np.int64)
        for track_id in ids[index]:
            first_seen.setdefault(int(track_id), index)
    return boxes, scores, ids, first_seen


def run_schedule(label: str, pipeline, detector: ReplayDetector, estimator, video: Path, segments,
                 ref_boxes: dict, ref_scores: dict, ref_ids: dict, first_seen: dict) -> RunStats:
    stats = RunStats(label)
    last_match: dict[int, int] = {}  # reference id -> pipeline id it was last matched to
    ever_matched: set[int] = set()  # reference ids this run has followed at some frame
    pipeline_ids: set[tuple[int, int]] = set()
    crops_before = getattr(estimator, "crops", 0)
    t0 = time.perf_counter()
    segment_seen = None
    last_detection = -1
    for segment, index, frame in read_frames(video, segments):
        if segment != segment_seen:  # a cut between segments: start over, as at a scene change
            pipeline.reset()
            segment_seen = segment
            last_detection = -1
            last_match.clear()
        detector.frame_index = index
        if hasattr(estimator, "frame_index"):
            estimator.frame_index = index
        result = pipeline.process(frame)
        if result.detected:
            last_detection = index
            stats.detected_frames.append(index)
        stats.frames += 1
        tracked = np.array([p.box for p in result.people], np.float32).reshape(-1, 4)
        tracked_ids = [p.track_id for p in result.people]
        pipeline_ids.update((segment, track_id) for track_id in tracked_ids)  # ids restart per segment
        reference = ref_boxes[index]
        stats.reference_boxes += len(reference)
        stats.tracked_boxes += len(tracked)
        pairs_50 = match(reference, tracked, 0.5)
        stats.matched_50 += len(pairs_50)
        stats.tracked_matched_50 += len(pairs_50)
        stats.matched_30 += len(match(reference, tracked, 0.3))
        for r, c in pairs_50:
            ref_id = int(ref_ids[index][r])
            if ref_id in last_match and last_match[ref_id] != tracked_ids[c]:
                stats.id_switches += 1
            last_match[ref_id] = tracked_ids[c]
            ever_matched.add(ref_id)
        matched_rows = {r for r, _ in pairs_50}
        confident = ref_scores[index] >= CONFIDENT
        stats.reference_confident += int(confident.sum())
        stats.matched_confident += sum(1 for r in matched_rows if confident[r])
        for r in range(len(reference)):
            if r in matched_rows:
                continue
            ref_id = int(ref_ids[index][r])
            if first_seen.get(ref_id, index) > last_detection:
                stats.misses_new += 1
            elif ref_id in ever_matched:
                stats.misses_lost += 1
            else:
                stats.misses_never += 1
    stats.seconds = time.perf_counter() - t0
    stats.detector_calls = pipeline.detector_calls
    stats.pipeline_ids = len(pipeline_ids)
    stats.pose_crops = getattr(estimator, "crops", 0) - crops_before
    return stats


BORDER_PX = 8  # a box this close to the frame border is entering or leaving


def frame_size(video: Path) -> tuple[int, int]:
    """(width, height) of a video's frames."""
    capture = cv2.VideoCapture(str(video))
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        capture.release()


def track_births(boxes: dict, scores: dict, ref_ids: dict, first_seen: dict, segments,
                 size: tuple[int, int]) -> dict:
    """Where reference tracks begin: people walking in start at the border, people the detector
    sees only now and then start anywhere, with low scores. Counts tracks begun after the first
    frame of their segment."""
    width, height = size
    starts = {start for start, _ in segments}
    at_border, first_scores = 0, []
    for track_id, index in first_seen.items():
        if index in starts:
            continue
        row = list(ref_ids[index]).index(track_id)
        x0, y0, x1, y1 = boxes[index][row]
        at_border += min(x0, y0, width - 1 - x1, height - 1 - y1) < BORDER_PX
        first_scores.append(scores[index][row])
    return {"count": len(first_scores), "at_border": int(at_border),
            "median_score": float(np.median(first_scores)) if first_scores else float("nan")}


def derived_box_agreement(estimator, video: Path, segments, boxes: dict, every: int = 4
                          ) -> tuple[np.ndarray, np.ndarray]:
    """On every `every`-th frame, for each reference box: the IoU with the box `boxes_from_keypoints`
    derives from the keypoints estimated in that very box (the best a derived box can agree with
    the detector's before any motion: a ceiling on the schedule's recall), and the person's mean
    keypoint score (what the weak-track trigger compares with min_track_score). Two (M,) arrays."""
    threshold = PipelineConfig().keypoint_threshold
    ious, mean_scores = [], []
    for _, index, frame in read_frames(video, segments):
        if index % every or len(boxes[index]) == 0:
            continue
        estimator.frame_index = index
        pose = estimator.estimate(frame, boxes[index])
        derived = boxes_from_keypoints(pose.keypoints, pose.scores, threshold=threshold)
        mean_scores.extend(pose.scores.mean(axis=1))
        for reference, box in zip(boxes[index], derived):
            ious.append(box_iou(reference[None], box[None])[0, 0] if np.isfinite(box).all() else 0.0)
    return np.asarray(ious), np.asarray(mean_scores)


def schedules() -> list[tuple[str, type, PipelineConfig]]:
    default = PipelineConfig()
    rows = [("N=1 (every frame)", PosePipeline, PipelineConfig(detect_every=1))]
    for n in (4, 8, 16):
        rows.append((f"N={n}" + (" (default)" if n == default.detect_every else ""), PosePipeline,
                     PipelineConfig(detect_every=n)))
    if default.detect_every not in (4, 8, 16):
        rows.append((f"N={default.detect_every} (default)", PosePipeline, PipelineConfig()))
    rows.append(("N=8, min_track_score=0", PosePipeline, PipelineConfig(detect_every=8, min_track_score=0.0)))
    rows.append(("N=8 + edge trigger", EdgeTriggerPipeline, EdgePipelineConfig(detect_every=8)))
    rows.append(("N=8, keypoint-extent boxes (old rule)", KeypointExtentPipeline, PipelineConfig(detect_every=8)))
    from benchmarks.box_carry import KeypointCarryPipeline  # the carry before issue 17

    rows.append(("N=8, keypoint carry always (before issue 17)", KeypointCarryPipeline, PipelineConfig(detect_every=8)))
    return rows


def measure_video(name: str, video: Path, segments, detector, pose, only: set[str] | None) -> dict:
    boxes, scores, detect_ms = detect_all(detector, video, segments)
    frames = len(boxes)
    replay = ReplayDetector(boxes, scores)
    ref_boxes, ref_scores, ref_ids, first_seen = reference_run(replay, video, segments)
    detector_per_frame = sum(len(b) for b in boxes.values()) / max(frames, 1)
    people_per_frame = sum(len(b) for b in ref_boxes.values()) / max(frames, 1)
    print(f"\n{name}: {frames} frames, detector {detect_ms:.0f} ms/frame, {detector_per_frame:.1f} detector boxes "
          f"and {people_per_frame:.1f} reference people per frame", flush=True)
    births = track_births(ref_boxes, ref_scores, ref_ids, first_seen, segments, frame_size(video))
    print(f"  reference tracks begun after a segment's first frame: {births['count']}, "
          f"{births['at_border']} of them within {BORDER_PX} px of the frame border; median detector score "
          f"of their first box {births['median_score']:.2f}", flush=True)
    cached = CachedEstimator(pose)
    detection_keys = {(i, box.tobytes()) for i, b in boxes.items()
                      for box in np.ascontiguousarray(b, np.float32).reshape(-1, 4)}
    agreement, mean_scores = derived_box_agreement(cached, video, segments, ref_boxes)
    weak = np.mean(mean_scores < PipelineConfig().min_track_score)
    print(f"  derived box vs detector box on the same frame: median IoU {np.median(agreement):.2f}, "
          f"{np.mean(agreement < 0.5):.1%} below 0.5, {np.mean(agreement < 0.3):.1%} below 0.3 "
          f"({len(agreement)} boxes); mean keypoint score on detector boxes: 5th percentile "
          f"{np.percentile(mean_scores, 5):.2f}, {weak:.1%} below min_track_score", flush=True)
    runs = []
    for label, pipeline_class, config in schedules():
        if only and not any(label.startswith(o) for o in only):
            continue
        estimator = NoPoseEstimator() if config.detect_every <= 1 else cached
        pipeline = pipeline_class(replay, estimator, config)
        stats = run_schedule(label, pipeline, replay, estimator, video, segments, ref_boxes, ref_scores, ref_ids,
                             first_seen)
        cached.forget_all_but_detections(detection_keys)
        runs.append(stats)
        row = stats.row()
        print(f"  {label:28s} det/frame {row['det/frame']:.3f}  recall@0.5 {row['recall@0.5']:.3f}  "
              f"recall@0.3 {row['recall@0.3']:.3f}  precision {row['precision@0.5']:.3f}  idsw {stats.id_switches}  "
              f"ids {stats.pipeline_ids}  miss new/never/lost {stats.misses_new}/{stats.misses_never}/{stats.misses_lost}  "
              f"crops/frame {row['crops/frame']:.1f}  ({stats.seconds:.0f} s)", flush=True)
    return {"name": name, "video": video, "segments": segments, "frames": frames, "detect_ms": detect_ms,
            "detector_per_frame": detector_per_frame, "ref_boxes_per_frame": people_per_frame,
            "max_people": max((len(b) for b in ref_boxes.values()), default=0), "runs": runs,
            "agreement": agreement, "mean_scores": mean_scores, "births": births}


# --------------------------------------------------------------------------------------------
# Report


def machine_info() -> dict:
    import ultralytics

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "ultralytics": ultralytics.__version__, "opencv": cv2.__version__, "numpy": np.__version__,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def markdown(results: list[dict], coco: dict, machine: dict, command: str, cpu_seconds: float,
             wall_seconds: float) -> str:
    """The report: command, machine, and one table per video. Timings are left out on purpose (the
    detector's speed is benchmarks/pipeline_bench.py's business, and this machine is shared)."""
    lines = [
        f"Command: `{command}`",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, no GPU; Python {machine['python']}, "
        f"ultralytics {machine['ultralytics']}, OpenCV {machine['opencv']}, numpy {machine['numpy']}; "
        f"{machine['date']}; the whole run used {cpu_seconds / 60:.1f} min of CPU time ({wall_seconds / 60:.1f} min "
        "wall clock on a machine shared with other jobs).",
        "",
        f"Stand-in pose model on the shared COCO people (83 images, annotated boxes, app.evaluate): "
        f"AP {coco['AP']:.3f}, AP50 {coco['AP50']:.3f}, AR {coco['AR']:.3f}.",
        "",
    ]
    columns = ["run", "det/frame", "recall@0.5", "recall@0.3", f"recall@0.5 score>={CONFIDENT}", "precision@0.5",
               "idsw", "ids", "miss new", "miss never", "miss lost", "crops/frame"]
    for result in results:
        segments = ", ".join(f"{a}-{b - 1}" for a, b in result["segments"])
        lines += [
            f"### {result['name']} ({result['video'].name}, frames {segments}: {result['frames']} frames)",
            "",
            f"Reference: {result['ref_boxes_per_frame']:.2f} people per frame (at most {result['max_people']}) "
            f"from {result['detector_per_frame']:.2f} detector boxes per frame. Derived box against the detector's on the "
            f"same frame (every 4th frame, {len(result['agreement'])} boxes): median IoU "
            f"{np.median(result['agreement']):.2f}, {np.mean(result['agreement'] < 0.5):.0%} below 0.5, "
            f"{np.mean(result['agreement'] < 0.3):.0%} below 0.3. The stand-in's mean keypoint score on "
            f"those detector boxes: 5th percentile {np.percentile(result['mean_scores'], 5):.2f}, "
            f"{np.mean(result['mean_scores'] < PipelineConfig().min_track_score):.1%} below min_track_score "
            f"{PipelineConfig().min_track_score}. Reference tracks begun after the first frame: "
            + (f"{result['births']['count']}, {result['births']['at_border']} of them within {BORDER_PX} px "
               f"of the border; median detector score of their first box {result['births']['median_score']:.2f}."
               if result["births"]["count"] else "none."),
            "",
            "| " + " | ".join(columns) + " |",
            "|" + "|".join("---" if c == "run" else "---:" for c in columns) + "|",
        ]
        for stats in result["runs"]:
            row = stats.row()
            cells = []
            for column in columns:
                value = row[column]
                cells.append(str(value) if not isinstance(value, float)
                             else f"{value:.1f}" if column == "crops/frame" else f"{value:.3f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_report(path: Path, generated: str) -> None:
    """Replaces the text between the report markers of `path` (or appends them when absent)."""
    text = path.read_text() if path.exists() else ""
    block = f"{MARKERS[0]}\n{generated}\n{MARKERS[1]}"
    if MARKERS[0] in text and MARKERS[1] in text:
        head, rest = text.split(MARKERS[0], 1)
        tail = rest.split(MARKERS[1], 1)[1]
        text = head + block + tail
    else:
        text = text + ("\n" if text else "") + block + "\n"
    path.write_text(text)


def parse_segments(text: str) -> list[tuple[int, int]]:
    """'0:400,700:900' -> [(0, 400), (700, 900)]."""
    return [tuple(int(x) for x in part.split(":")) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", nargs="+", default=list(VIDEOS), choices=list(VIDEOS))
    parser.add_argument("--frames", action="append", default=[], metavar="NAME=START:STOP[,START:STOP]",
                        help="frame segments of a video instead of the default, e.g. dancer=0:400,700:900")
    parser.add_argument("--only", nargs="*", help="run only the schedules whose label starts with these")
    parser.add_argument("--detector", default=str(DETECTOR))
    parser.add_argument("--pose-model", default=str(POSE_MODEL))
    parser.add_argument("--threads", type=int, default=None, help="LiteRT threads (default: all cores)")
    parser.add_argument("--write", type=Path, help="replace the generated part of this markdown file")
    args = parser.parse_args()

    from app.detector import DetectorConfig, PersonDetector

    segments_of = {name: segments for name, (_, segments) in VIDEOS.items()}
    for item in args.frames:
        name, _, text = item.partition("=")
        segments_of[name] = parse_segments(text)
    started, started_cpu = time.perf_counter(), time.process_time()
    detector = PersonDetector(DetectorConfig(model=args.detector, threads=args.threads))
    pose = CropPoseEstimator(args.pose_model, threads=args.threads)
    coco = coco_check(pose)
    print(f"stand-in pose model on the shared COCO people (annotated boxes): AP {coco['AP']:.3f}, "
          f"AP50 {coco['AP50']:.3f}, AR {coco['AR']:.3f}", flush=True)
    results = [measure_video(name, VIDEOS[name][0], segments_of[name], detector, pose,
                             set(args.only) if args.only else None) for name in args.videos]
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
    print(f"\nwhole run {seconds:.0f} s, {cpu_seconds:.0f} s of CPU")
    if args.write:
        import shlex
        import sys

        command = "python -m benchmarks.detect_schedule " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        write_report(args.write, markdown(results, coco, machine_info(), command, cpu_seconds, seconds))
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
