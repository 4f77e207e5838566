"""IouTracker: stable ids, dropping, bounded state, bad boxes; boxes_from_keypoints on real COCO people."""

import json

import numpy as np
import pytest

from app.tracker import REFUSED, IouTracker, TrackerConfig, box_iou, boxes_from_keypoints


def box(cx: float, cy: float, w: float = 60, h: float = 160) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def test_two_people_crossing_paths_keep_their_ids():
    # Same size, same height, walking towards each other at 6 px/frame: at the crossing the two boxes
    # coincide, so only their motion tells them apart. Detector-like jitter of 1.5 px on every side.
    rng = np.random.default_rng(0)
    tracker = IouTracker(TrackerConfig())
    first = None
    for t in range(60):
        a, b = 100 + 6 * t, 454 - 6 * t  # they meet at t = 29.5
        boxes = np.array([box(a, 200), box(b, 200)]) + rng.normal(0, 1.5, (2, 4))
        ids = tracker.update(boxes, np.array([0.9, 0.8]))
        if first is None:
            first = ids.copy()
        assert list(ids) == list(first), f"ids swapped at frame {t}"
    assert sorted(tracker.active_ids()) == sorted(first)


def test_crossing_with_different_sizes_and_order_shuffled():
    # A near (big) and a far (small) walker cross; the boxes arrive in a different order each frame.
    rng = np.random.default_rng(1)
    tracker = IouTracker()
    names = {}
    for t in range(50):
        people = {"near": box(80 + 8 * t, 260, 90, 240), "far": box(480 - 7 * t, 220, 50, 130)}
        order = list(people) if t % 2 else list(reversed(people))
        ids = tracker.update(np.array([people[name] for name in order]), np.ones(2))
        for name, track_id in zip(order, ids):
            assert names.setdefault(name, int(track_id)) == int(track_id), f"{name} changed id at frame {t}"
    assert len(set(names.values())) == 2


def test_vanished_track_is_dropped_after_max_missed_and_its_id_never_returns():
    config = TrackerConfig(max_missed=4)
    tracker = IouTracker(config)
    for _ in range(5):
        (track_id,) = tracker.update(np.array([box(200, 200)]), np.ones(1))
    for missed in range(1, config.max_missed + 1):  # still alive while missed <= max_missed
        tracker.update(np.zeros((0, 4)), np.zeros(0))
        assert tracker.active_ids() == [track_id], f"dropped early, after {missed} missed frames"
        assert tracker.dropped_ids() == []
    tracker.update(np.zeros((0, 4)), np.zeros(0))
    assert tracker.active_ids() == []
    assert tracker.dropped_ids() == [track_id]
    # The same person comes back at the same place: a new id, larger than every earlier one.
    (new_id,) = tracker.update(np.array([box(200, 200)]), np.ones(1))
    assert new_id > track_id
    assert tracker.dropped_ids() == []


def test_a_short_gap_keeps_the_id():
    tracker = IouTracker(TrackerConfig(max_missed=5))
    (track_id,) = tracker.update(np.array([box(200, 200)]), np.ones(1))
    for _ in range(3):
        tracker.update(np.zeros((0, 4)), np.zeros(0))
    (again,) = tracker.update(np.array([box(203, 201)]), np.ones(1))
    assert again == track_id


def test_thousand_frames_of_people_coming_and_going_keep_the_table_bounded():
    config = TrackerConfig(max_missed=10)
    tracker = IouTracker(config)
    rng = np.random.default_rng(2)
    largest_table, people_seen, ids_given = 0, 0, set()
    people = []  # [x, y, vx, frames left]
    gone = []  # [x, y, frame left]: a newcomer right there would rightly inherit the old track
    for t in range(1000):
        if rng.random() < 0.1:  # someone enters, at a random place, away from the others
            x, y = rng.uniform(50, 1200), rng.uniform(100, 600)
            nearby = people + [g for g in gone if t - g[2] <= config.max_missed + 1]
            if all(abs(x - p[0]) > 150 or abs(y - p[1]) > 250 for p in nearby):
                people.append([x, y, rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 3), int(rng.integers(20, 80))])
                people_seen += 1
        boxes = np.array([box(p[0], p[1]) for p in people]).reshape(-1, 4)
        ids = tracker.update(boxes, np.full(len(boxes), 0.9))
        ids_given.update(int(i) for i in ids)
        for p in people:
            p[0] += p[2]
            p[3] -= 1
        gone += [[p[0], p[1], t] for p in people if p[3] <= 0]
        people = [p for p in people if p[3] > 0]
        largest_table = max(largest_table, len(tracker.active_ids()))
    assert people_seen >= 40
    assert len(ids_given) == people_seen  # one id per person: no id switches, no duplicates
    # Live people plus those gone within max_missed frames: never more than a handful.
    assert largest_table <= 12
    assert len(tracker._tracks) == len(tracker.active_ids())


def test_nan_zero_area_and_empty_boxes_are_refused_without_disturbing_real_tracks():
    tracker = IouTracker()
    (good,) = tracker.update(np.array([box(300, 300)]), np.ones(1))
    boxes = np.array([
        [np.nan, 10, 50, 60],  # not finite
        box(300, 300),  # the real person
        [40, 40, 40, 90],  # zero width
        [10, 10, 60, 10],  # zero height
        [80, 80, 20, 20],  # inverted
        [0, 0, np.inf, 30],  # not finite
    ])
    ids = tracker.update(boxes, np.ones(len(boxes)))
    assert list(ids) == [REFUSED, good, REFUSED, REFUSED, REFUSED, REFUSED]
    assert tracker.active_ids() == [good]
    empty = tracker.update(np.zeros((0, 4)), np.zeros(0))
    assert empty.shape == (0,)
    all_nan = tracker.update(np.full((3, 4), np.nan), np.ones(3))
    assert list(all_nan) == [REFUSED] * 3
    assert tracker.active_ids() == [good]  # aged twice, not dropped
    (still,) = tracker.update(np.array([box(301, 300)]), None)
    assert still == good


def test_weak_boxes_keep_tracks_but_do_not_start_them():
    tracker = IouTracker(TrackerConfig(min_new_score=0.5))
    ids = tracker.update(np.array([box(100, 200), box(400, 200)]), np.array([0.9, 0.2]))
    assert ids[0] >= 1 and ids[1] == REFUSED
    (same,) = tracker.update(np.array([box(102, 200)]), np.array([0.1]))
    assert same == ids[0]


def test_scores_must_match_boxes():
    with pytest.raises(ValueError, match="2 boxes but 3 scores"):
        IouTracker().update(np.array([box(1, 1), box(5, 5)]), np.ones(3))


def test_box_iou_values():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30], [3, 3, 3, 3]])
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 1.0, 0.0, 0.0]])


def test_boxes_from_keypoints_pads_the_confident_extent():
    keypoints = np.array([[[100, 50], [140, 250], [120, 150], [900, 900]]], np.float32)
    scores = np.array([[0.9, 0.8, 0.5, 0.1]], np.float32)  # the far point is not confident
    (result,) = boxes_from_keypoints(keypoints, scores, threshold=0.3, padding=1.25)
    # extent 40 x 200 around (120, 150) -> 50 x 250
    np.testing.assert_allclose(result, [95, 25, 145, 275], atol=1e-4)


def test_boxes_from_keypoints_is_nan_with_fewer_than_two_usable_joints():
    keypoints = np.array([[[10, 10], [20, 20]], [[10, 10], [np.nan, 5]], [[1, 1], [2, 2]]], np.float32)
    scores = np.array([[0.9, 0.9], [0.9, 0.9], [0.9, 0.1]], np.float32)
    boxes = boxes_from_keypoints(keypoints, scores)
    assert np.isfinite(boxes[0]).all()
    assert np.isnan(boxes[1]).all() and np.isnan(boxes[2]).all()
    assert boxes_from_keypoints(np.zeros((0, 17, 2)), np.zeros((0, 17))).shape == (0, 4)


def test_boxes_from_keypoints_match_coco_person_boxes(coco_subset):
    annotations, _ = coco_subset
    data = json.loads(annotations.read_text())
    ious = []
    for ann in data["annotations"]:
        labelled = np.array(ann["keypoints"], np.float32).reshape(-1, 3)
        if ann.get("iscrowd") or (labelled[:, 2] > 0).sum() < 12:
            continue
        derived = boxes_from_keypoints(labelled[None, :, :2], (labelled[None, :, 2] > 0).astype(np.float32))
        x, y, w, h = ann["bbox"]
        ious.append(box_iou(derived, np.array([[x, y, x + w, y + h]]))[0, 0])
    assert len(ious) >= 30
    # The derived box must stand in for a detector's: it overlaps the annotated box well.
    assert np.median(ious) > 0.75
    assert np.quantile(ious, 0.1) > 0.5
