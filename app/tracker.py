"""Stable person ids across frames: IoU association solved with the Hungarian method.

`IouTracker.update(boxes, scores)` returns one id per box. Each live track remembers its last box
and a smoothed per-frame box velocity; a frame's boxes are matched to the tracks' predicted boxes by
maximising the total IoU (scipy's `linear_sum_assignment`), and pairs below `iou_threshold` are not
matched. Unmatched boxes start new tracks with fresh ids (ids only ever increase, so a dead id is
never reused); unmatched tracks age and are dropped after `max_missed` frames, so the table only
holds live tracks however long the video runs.

`boxes_from_keypoints` turns a person's confident keypoints into the box a detector would have
drawn, so the pipeline can follow people between detector runs.
"""

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

REFUSED = -1  # the id given to a box that cannot be tracked (not finite, or no area)


@dataclass
class TrackerConfig:
    iou_threshold: float = 0.3  # a box and a track with less overlap than this are never paired
    # Frames an unmatched track survives (DeepSORT keeps 70, ByteTrack 30 at 30 fps): long enough
    # to bridge a detector that loses a person through a hard move (the int8 YOLOv8n loses the
    # dancer for 45 frames in a crouch) or an occlusion. A lost track is not drawn and costs a few
    # numbers; its box stops moving after `max_extrapolate` frames and waits where it was lost.
    max_missed: int = 60
    max_extrapolate: int = 5  # frames a lost track's box keeps moving with its velocity
    # As ByteTrack: weak boxes (the detector runs at a low confidence) may keep an existing track
    # alive but never start one (ByteTrack starts tracks at 0.6), so a person the detector
    # half-loses keeps their id without weak false positives becoming people.
    min_new_score: float = 0.5
    # Weight of the newest displacement in the velocity estimate: detector boxes jitter by a few
    # pixels, so a single frame's displacement alone would make the predicted box wander.
    velocity_weight: float = 0.5


@dataclass
class _Track:
    track_id: int
    box: np.ndarray  # (4,) xyxy of the last matched box
    velocity: np.ndarray  # (4,) pixels per frame, for each box coordinate
    missed: int = 0  # frames since the last match
    hits: int = 1  # frames matched so far
    score: float = 0.0  # score of the last matched box

    def predicted_box(self, max_extrapolate: int) -> np.ndarray:
        # Velocity is only a guide for a few frames; beyond that a lost box that kept moving would
        # wander off the place where its person is most likely to reappear.
        return self.box + self.velocity * min(self.missed + 1, max_extrapolate)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N, 4) with every box in b (M, 4), xyxy -> (N, M); 0 where a box has no area."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    # np.maximum(v, 0), not np.clip(v, 0, None): the same values (NaN stays NaN), a tenth of the overhead.
    # Widths and heights as (x, y) pairs: each operation serves both axes.
    size_a, size_b = np.maximum(a[:, 2:] - a[:, :2], 0), np.maximum(b[:, 2:] - b[:, :2], 0)  # (N, 2), (M, 2)
    area_a, area_b = size_a[:, 0] * size_a[:, 1], size_b[:, 0] * size_b[:, 1]
    overlap = np.maximum(np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]), 0)
    inter = overlap[..., 0] * overlap[..., 1]  # (N, M)
    union = area_a[:, None] + area_b[None, :] - inter
    iou = np.zeros_like(union)
    np.divide(inter, union, out=iou, where=union > 0)  # only where defined: no 0/0 to silence
    return iou if np.isfinite(iou).all() else np.nan_to_num(iou, nan=0.0, posinf=0.0, neginf=0.0)


class IouTracker:
    """Gives each person box a stable integer id across frames (ids start at 1 and only increase)."""

    def __init__(self, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._dropped: list[int] = []

    def update(self, boxes: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
        """Associate this frame's boxes with the live tracks.

        boxes: (N, 4) xyxy image pixels; scores: (N,) detector scores (None: all 1).
        Returns ids (N,) int64 in box order; `REFUSED` (-1) for a box that is not finite or has no
        area (it neither matches nor starts a track), and for an unmatched box scoring below
        `min_new_score`. Ids of tracks dropped by this call are in
        `dropped_ids()` afterwards.
        """
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        n = len(boxes)
        scores = np.ones(n) if scores is None else np.asarray(scores, np.float64).reshape(-1)
        if len(scores) != n:
            raise ValueError(f"got {n} boxes but {len(scores)} scores")
        if not np.isfinite(scores).all():  # (nan_to_num costs more than the rest of a frame's update)
            scores = np.nan_to_num(scores, nan=0.0)
        ids = np.full(n, REFUSED, np.int64)
        usable = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        candidates = np.flatnonzero(usable)

        matched_tracks: set[int] = set()
        if len(candidates) and self._tracks:
            predicted = np.stack([track.predicted_box(self.config.max_extrapolate) for track in self._tracks])
            iou = box_iou(boxes[candidates], predicted)
            rows, cols = linear_sum_assignment(iou, maximize=True)
            for row, col in zip(rows, cols):
                if iou[row, col] < self.config.iou_threshold:
                    continue
                box_index = candidates[row]
                self._match(self._tracks[col], boxes[box_index], scores[box_index])
                ids[box_index] = self._tracks[col].track_id
                matched_tracks.add(col)

        for box_index in candidates:
            if ids[box_index] == REFUSED and scores[box_index] >= self.config.min_new_score:
                track = _Track(self._next_id, boxes[box_index].copy(), np.zeros(4), score=float(scores[box_index]))
                self._next_id += 1
                self._tracks.append(track)
                ids[box_index] = track.track_id
                matched_tracks.add(len(self._tracks) - 1)

        self._dropped = []
        survivors = []
        for index, track in enumerate(self._tracks):
            if index not in matched_tracks:
                track.missed += 1
            if track.missed > self.config.max_missed:
                self._dropped.append(track.track_id)
            else:
                survivors.append(track)
        self._tracks = survivors
        return ids

    def _match(self, track: _Track, box: np.ndarray, score: float) -> None:
        gap = track.missed + 1  # frames since the box was last seen
        step = (box - track.box) / gap
        weight = self.config.velocity_weight if track.hits > 1 else 1.0
        track.velocity = weight * step + (1 - weight) * track.velocity
        track.box = box.copy()
        track.missed = 0
        track.hits += 1
        track.score = float(score)

    def active_ids(self) -> list[int]:
        """Ids of the live tracks, matched this frame or not (yet) dropped."""
        return [track.track_id for track in self._tracks]

    def dropped_ids(self) -> list[int]:
        """Ids whose tracks the last `update` dropped: their per-track state can be freed."""
        return list(self._dropped)

    def reset(self, restart_ids: bool = False) -> None:
        """Forget every track; ids still continue from where they were, so none is ever reused,
        unless `restart_ids` (unrelated images: each one's first person is #1 again)."""
        self._dropped = self.active_ids()
        self._tracks = []
        if restart_ids:
            self._next_id = 1


def boxes_from_keypoints(
    keypoints: np.ndarray, scores: np.ndarray, threshold: float = 0.3, padding: float = 1.25
) -> np.ndarray:
    """The box each person's confident keypoints imply, grown to look like a detector's box.

    keypoints: (N, K, 2) x, y image pixels; scores: (N, K). Joints scoring below `threshold` or not
    finite are ignored. Returns (N, 4) float32 xyxy; a row is NaN when a person has fewer than two
    usable joints (no extent to measure), which `IouTracker.update` refuses.

    Why 1.25: joints sit inside the body (eyes below the top of the head, ankles above the soles,
    wrists short of the fingertips), so their extent is smaller than a person box. On the 36 people
    of the shared COCO subset with at least 12 labelled joints, the annotated box over the joints'
    extent has a median of 1.28 in width and 1.19 in height (tests/test_tracker.py measures the
    resulting IoU); 1.25 on both sides of the centre sits between the two.
    """
    keypoints = np.asarray(keypoints, np.float64)
    scores = np.asarray(scores, np.float64)
    if keypoints.ndim != 3 or keypoints.shape[-1] != 2 or scores.shape != keypoints.shape[:2]:
        raise ValueError(f"expected keypoints (N, K, 2) and scores (N, K), got {keypoints.shape} and {scores.shape}")
    usable = (scores >= threshold) & np.isfinite(keypoints).all(axis=-1)
    # All people at once (the live smoother measures everyone's size with it every frame).
    low = np.where(usable[..., None], keypoints, np.inf).min(axis=1, initial=np.inf)  # (N, 2)
    high = np.where(usable[..., None], keypoints, -np.inf).max(axis=1, initial=-np.inf)
    with np.errstate(invalid="ignore"):  # inf - inf for people without usable joints: set to NaN below
        centre, half = (low + high) / 2, (high - low) / 2 * padding
        boxes = np.concatenate([centre - half, centre + half], axis=1).astype(np.float32)
    boxes[usable.sum(axis=1) < 2] = np.nan
    return boxes.reshape(len(keypoints), 4)
