"""The one place that composes the per-frame stages: detect -> crop/model/decode -> track -> smooth.

`PosePipeline.process(frame)` takes one BGR frame and returns the people in it with stable track ids,
raw and smoothed keypoints, and how long each stage took. Input/output, threads and the user interface
live in `app.demo`; the stages themselves live in their own modules and know nothing of each other.

Detector scheduling (why not every frame): YOLO costs about as much as one pose forward pass on a CPU.
Between detections each tracked person's box is carried from their last smoothed keypoints, which
follow the person as well as a fresh detection does while the keypoints are steady, and by the
box's own recent motion when they are not (`_derive_next_boxes`). The detector
runs again every `detect_every` frames (people may have entered), as soon as a track's keypoints
turn weak (the box may have slipped off the person), and when no one is tracked.
"""

import time
from dataclasses import dataclass, field

import numpy as np

from app.smoothing import KalmanBank, KalmanConfig
from app.tracker import IouTracker, TrackerConfig, boxes_from_keypoints


@dataclass
class PipelineConfig:
    detect_every: int = 8  # frames between detector runs while every track is healthy (1 = every frame)
    min_track_score: float = 0.35  # mean keypoint score under which a derived box is not trusted
    keypoint_threshold: float = 0.3  # joints scoring below this are not used to derive boxes
    kalman: bool = True  # show smoothed keypoints (the filters run either way, so a toggle is seamless)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    smoothing: KalmanConfig = field(default_factory=KalmanConfig)


@dataclass
class Person:
    """One tracked person in one frame; K joints."""

    track_id: int
    box: np.ndarray  # (4,) xyxy, image pixels
    box_score: float
    raw_keypoints: np.ndarray  # (K, 2) as decoded from the heatmaps
    smoothed_keypoints: np.ndarray  # (K, 2) after the live Kalman filter (app.offline.FixedLagStage: the offline one)
    scores: np.ndarray  # (K,) heatmap peak values
    visible: np.ndarray  # (K,) bool: confident now, or predicted for a few frames by the filter
    kalman: bool  # which of the two `keypoints` returns

    @property
    def keypoints(self) -> np.ndarray:
        return self.smoothed_keypoints if self.kalman else self.raw_keypoints


@dataclass
class FrameResult:
    people: list[Person]
    detected: bool  # whether the detector ran on this frame
    timings_ms: dict[str, float]  # stage -> milliseconds: detect, crop, model, decode, track, smooth
    heatmaps: np.ndarray | None = None  # (N, h, w, K) in people order, when asked for


class PosePipeline:
    """Per-frame composition of detector, pose estimator, tracker and smoothers.

    detector: object with `detect(frame) -> (boxes (N,4) xyxy, scores (N,))` (app.detector.PersonDetector).
    estimator: object with `estimate(frame, boxes, return_heatmaps) -> PoseResult` (app.pose.PoseEstimator).
    """

    def __init__(self, detector, estimator, config: PipelineConfig | None = None):
        self.detector = detector
        self.estimator = estimator
        self.config = config or PipelineConfig()
        self.kalman = self.config.kalman
        self.detector_calls = 0
        self._tracker = IouTracker(self.config.tracker)
        self._smoothers = KalmanBank(self.config.smoothing)  # every tracked person's filter, keyed by id
        self._next_boxes = np.zeros((0, 4), np.float32)  # derived from the last keypoints
        self._anchors: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id -> (detector box, keypoint box then)
        self._detections: dict[int, list[tuple[int, np.ndarray]]] = {}  # id -> recent (frame, detector box)
        self._unsteady: dict[int, int] = {}  # id -> frames with unsteady keypoints since its last detection
        self._frame_index = 0
        self._next_scores = np.zeros((0,), np.float32)
        self._frames_since_detect = 0
        self._frame_shape: tuple[int, ...] | None = None

    def reset(self, restart_ids: bool = False) -> None:
        """Forget every track (a new scene, or a frame size change); ids continue, never reused,
        unless `restart_ids` (a folder of unrelated images: each image numbers its people from 1)."""
        self._tracker.reset(restart_ids)
        self._smoothers.reset()
        self._anchors, self._detections, self._unsteady = {}, {}, {}
        self._next_boxes = np.zeros((0, 4), np.float32)
        self._next_scores = np.zeros((0,), np.float32)
        self._frames_since_detect = 0

    def state_size(self) -> dict[str, int]:
        """How much per-person state is held: it must stay bounded however long the run."""
        return {"tracks": len(self._tracker.active_ids()), "smoothers": len(self._smoothers)}

    def _should_detect(self) -> bool:
        return (
            len(self._next_boxes) == 0
            or self.config.detect_every <= 1
            or self._frames_since_detect + 1 >= self.config.detect_every  # counts frames since, this one included
        )

    def process(self, frame: np.ndarray, want_heatmaps: bool = False) -> FrameResult:
        """frame: uint8 BGR (H, W, 3). Returns the people in it, in track order."""
        if frame.shape != self._frame_shape:
            # Boxes and filters are in the old frame's pixels: start over rather than drift.
            self.reset()
            self._frame_shape = frame.shape
        timings: dict[str, float] = {}

        # Only the stages that ran this frame get a time: the HUD shows "-" for the others, not 0.
        detected = self._should_detect()
        if detected:
            t0 = time.perf_counter()
            boxes, box_scores = self._detect(frame)
            timings["detect"] = (time.perf_counter() - t0) * 1000
        else:
            boxes, box_scores = self._next_boxes, self._next_scores

        pose = None
        if not detected and len(boxes):
            pose = self._estimate(frame, boxes, want_heatmaps, timings)
            # (sum / K is np.mean's own arithmetic, without its Python wrapper)
            weak = pose.scores.sum(axis=1) / pose.scores.shape[1] < self.config.min_track_score
            if weak.any():
                # A derived box may have slipped off its person: ask the detector, on this very frame,
                # rather than show a wrong skeleton for `detect_every` frames.
                t0 = time.perf_counter()
                boxes, box_scores = self._detect(frame)
                timings["detect"] = timings.get("detect", 0.0) + (time.perf_counter() - t0) * 1000
                detected, pose = True, None
        self._frames_since_detect = 0 if detected else self._frames_since_detect + 1

        # The tracker needs only boxes and scores, so on a detection frame it runs before the pose
        # model: the boxes it refuses (weak ones that neither start nor keep a person, 24 detector
        # boxes a frame against 13 people on street.avi) never cost a crop.
        t0 = time.perf_counter()
        ids = self._tracker.update(boxes, box_scores)
        self._smoothers.retain(self._tracker.active_ids())
        timings["track"] = (time.perf_counter() - t0) * 1000
        kept = np.flatnonzero(ids >= 0)  # REFUSED (-1): not finite, or too weak to start a person
        boxes, box_scores, ids = boxes[kept], box_scores[kept], ids[kept]
        if pose is None:
            pose = self._estimate(frame, boxes, want_heatmaps, timings)
            keypoints, scores, heatmaps = pose.keypoints, pose.scores, pose.heatmaps
        else:
            keypoints, scores = pose.keypoints[kept], pose.scores[kept]
            heatmaps = pose.heatmaps[kept] if pose.heatmaps is not None else None

        t0 = time.perf_counter()
        people = []
        if len(ids):
            # One batched update for everyone (app.smoothing.KalmanBank); the scale is the box diagonal.
            scales = np.hypot(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).astype(np.float64)  # as float32 boxes
            smoothed, visible = self._smoothers.update(ids.tolist(), keypoints, scores, scales)
            people = [Person(
                track_id=int(track_id), box=np.asarray(boxes[i], np.float32), box_score=float(box_scores[i]),
                raw_keypoints=keypoints[i], smoothed_keypoints=smoothed[i], scores=scores[i],
                visible=visible[i], kalman=self.kalman,
            ) for i, track_id in enumerate(ids)]
        timings["smooth"] = (time.perf_counter() - t0) * 1000

        self._derive_next_boxes(people, frame.shape, detected)
        return FrameResult(people=people, detected=detected, timings_ms=timings,
                           heatmaps=heatmaps if want_heatmaps else None)

    def _estimate(self, frame: np.ndarray, boxes: np.ndarray, want_heatmaps: bool, timings: dict):
        """The estimator's result; adds its stage times (crop, model, decode) into `timings`."""
        t0 = time.perf_counter()
        pose = self.estimator.estimate(frame, boxes, return_heatmaps=want_heatmaps)
        stages = getattr(pose, "timings_ms", None) or {"pose": (time.perf_counter() - t0) * 1000}
        for stage, ms in stages.items():
            timings[stage] = timings.get(stage, 0.0) + ms
        return pose

    def _detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.detector_calls += 1
        boxes, scores = self.detector.detect(frame)
        return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32).reshape(-1)

    def _derive_next_boxes(self, people: list[Person], shape: tuple[int, ...], detected: bool) -> None:
        """Boxes for the next frame, clipped to the frame. detected: whether `people`'s boxes are this
        frame's detector boxes.

        Each person keeps the size of their last detector box ("size lock": the keypoints' extent
        alone shrinks the box, a foot the model missed is cut from the next crop, found even less,
        and so on; docs/detect_schedule.md: street recall 51% -> 69%, id switches 32 -> 10). Where
        it moves to:
        - keypoints steady since that detection (the Kalman gate restarted half of the measured
          joints on at most one frame since; one such frame can be a real sudden move): as far
          as their keypoint box has moved since;
        - otherwise (keypoints that jump about frame after frame, e.g. an untrained model's): by
          the box's own motion, constant velocity from its recent detector boxes. Boxes carried from unsteady
          keypoints drift off their people and the next detection starts new ids
          (docs/detect_schedule.md, issue 17: street.avi 93 ids, now 35, against 34 with the detector on every frame).
        """
        self._frame_index += 1
        if not people:
            self._anchors, self._detections, self._unsteady = {}, {}, {}
            self._next_boxes = np.zeros((0, 4), np.float32)
            self._next_scores = np.zeros((0,), np.float32)
            return
        ids = [p.track_id for p in people]
        # (np.array of the rows, not np.stack: the same arrays, a third of the overhead.)
        keypoints = np.array([p.smoothed_keypoints for p in people])
        raw_scores = np.array([p.scores for p in people])
        scores = np.where(np.array([p.visible for p in people]), raw_scores, 0.0).astype(np.float32)
        derived = np.asarray(boxes_from_keypoints(keypoints, scores, threshold=self.config.keypoint_threshold),
                             np.float32).reshape(-1, 4)
        # Steady keypoints: the filter's gate (a jump of > gate person sizes in one frame) restarted
        # fewer than half of the measured joints. Joints returning from an occlusion restart too,
        # but are no sign of noise, so only gate jumps count.
        finite = np.isfinite(np.array([p.raw_keypoints for p in people])).all(axis=2)
        measured = finite & (raw_scores >= self.config.smoothing.score_threshold)
        steady = self._smoothers.jumped.sum(axis=1) < 0.5 * np.maximum(measured.sum(axis=1), 1)
        if detected:
            # A new track starts trusted (its joints all start afresh on its first frame).
            self._unsteady = {track_id: int(not steady[i] and track_id in self._unsteady) for i, track_id in enumerate(ids)}
            self._anchors = {track_id: (people[i].box.copy(), derived[i]) for i, track_id in enumerate(ids)
                             if np.isfinite(derived[i]).all()}
            horizon = 3 * max(self.config.detect_every, 1)  # detector boxes older than this say little
            self._detections = {track_id: [(f, b) for f, b in self._detections.get(track_id, [])
                                           if self._frame_index - f <= horizon] + [(self._frame_index, people[i].box.copy())]
                                for i, track_id in enumerate(ids)}
        else:
            self._unsteady = {track_id: self._unsteady.get(track_id, 0) + int(not steady[i])
                              for i, track_id in enumerate(ids)}
        boxes = derived.copy()
        derived_finite = np.isfinite(derived).all(axis=1).tolist()
        # (Keypoint-carried boxes are moved all at once below: per person, the shift's five small
        # array operations cost more than the rest of the carry.)
        carried, detector_boxes, boxes_then = [], [], []
        for i, track_id in enumerate(ids):
            anchor = self._anchors.get(track_id)
            history = self._detections.get(track_id)
            if anchor is None or not derived_finite[i]:
                continue  # too few confident joints, now or at the detection: the keypoints' own box (or none)
            # One unsteady frame can be a real sudden move; noise is unsteady frame after frame.
            if self._unsteady.get(track_id, 0) < 2 or not history:
                carried.append(i)
                detector_boxes.append(anchor[0])
                boxes_then.append(anchor[1])
            else:
                boxes[i] = constant_velocity_box(history, self._frame_index + 1)
        if carried:
            # As far as the keypoint box's centre moved since the detection.
            rows = np.array(carried)
            now, then = derived[rows], np.array(boxes_then)  # keypoint boxes now and at the detection
            shift = (now[:, :2] + now[:, 2:]) / 2 - (then[:, :2] + then[:, 2:]) / 2
            boxes[rows] = np.array(detector_boxes) + np.concatenate([shift, shift], axis=1)
        height, width = shape[:2]
        # np.minimum/np.maximum: np.clip costs more than the clip.
        boxes = np.minimum(np.maximum(boxes, np.float32(0)), np.array([width - 1, height - 1] * 2, np.float32))
        usable = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] - boxes[:, 0] > 4) & (boxes[:, 3] - boxes[:, 1] > 4)
        self._next_boxes = boxes[usable]
        self._next_scores = np.array([p.box_score for p in people], np.float32)[usable]


def constant_velocity_box(history: list[tuple[int, np.ndarray]], frame: int) -> np.ndarray:
    """(4,) the last detector box of a track moved to `frame` at the velocity of its centre over its
    detector boxes `history` [(frame, (4,) xyxy)], oldest first; not moved with a single box, or
    boxes closer than 2 frames apart (one frame's detector jitter is no velocity)."""
    first_frame, first = history[0]
    last_frame, last = history[-1]
    if last_frame - first_frame < 2:
        return last.copy()
    velocity = ((last[:2] + last[2:]) - (first[:2] + first[2:])) / 2 / (last_frame - first_frame)
    shift = velocity * (frame - last_frame)
    return (last + np.concatenate([shift, shift])).astype(np.float32)
