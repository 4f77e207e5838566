"""COCO keypoint evaluation: the real crop/decode/evaluate chain on real COCO images with an oracle model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from oracle import OracleEstimator

from app.errors import OutputError, SourceError
from app.evaluate import (
    EvalConfig, evaluate, gt_boxes, gt_person_annotations, image_results, load_coco, load_detections, main,
    oks_matrix, oks_nms, parse_args, person_scores, pose_config, run, write_results, xywh_to_xyxy,
)
from app.pose import PoseConfig
from app.skeleton import OKS_SIGMAS

ROOT = Path(__file__).resolve().parents[1]


def ground_truth(coco) -> dict:
    """{image_id: (keypoints (M, 17, 3), boxes (M, 4) xyxy)} of the people evaluate() estimates."""
    return {
        image_id: (np.array([a["keypoints"] for a in anns], np.float32).reshape(-1, 17, 3),
                   xywh_to_xyxy([a["bbox"] for a in anns]))
        for image_id, anns in gt_person_annotations(coco).items()
    }


@pytest.fixture(scope="module")
def coco_set():
    from conftest import asset

    annotations = asset("coco/annotations/person_keypoints_val2017_subset.json")
    images = asset("coco/images")
    coco = load_coco(annotations)
    return annotations, images, coco, ground_truth(coco)


# --- the oracle chain on real images --------------------------------------------------------------

@pytest.mark.parametrize("flip, udp", [(False, False), (True, False), (True, True)])
def test_perfect_model_scores_near_one(coco_set, flip, udp):
    _, images, coco, truth = coco_set
    estimator = OracleEstimator(truth, PoseConfig(flip=flip, udp=udp))  # udp: a model trained with UDP
    stats, results = evaluate(coco, images, estimator, progress=False, quiet=True)
    # Measured: AP 0.988 without flip, 0.989 with, 0.990 for UDP with flip (36 images, 80 people);
    # the rest is joints annotated outside the padded box, which no top-down crop can see.
    assert stats["AP"] >= 0.97
    assert len(results) == sum(len(k) for k, _ in truth.values()) == 80
    mirrored = [m for _, m in estimator.runner_calls]
    assert mirrored == ([False, True] * (len(mirrored) // 2) if flip else [False] * len(mirrored))


def test_a_wrong_flip_pair_drops_ap(coco_set):
    _, images, coco, truth = coco_set
    estimator = OracleEstimator(truth, PoseConfig(flip=True), mirror_index=list(range(17)))
    stats, _ = evaluate(coco, images, estimator, progress=False, quiet=True)
    assert stats["AP"] < 0.6  # measured 0.32


def test_results_are_coco_keypoint_results(coco_set):
    _, images, coco, truth = coco_set
    _, results = evaluate(coco, images, OracleEstimator(truth, PoseConfig()), progress=False, quiet=True)
    image_ids = set(coco.getImgIds())
    for r in results:
        assert set(r) == {"image_id", "category_id", "keypoints", "score"}
        assert r["category_id"] == 1 and r["image_id"] in image_ids
        assert len(r["keypoints"]) == 51 and np.isfinite(r["keypoints"]).all()
        assert 0 < r["score"] <= 1
    # With ground-truth boxes the box score is 1, so the person score is the mean confident joint score.
    assert max(r["score"] for r in results) > 0.9


def test_detection_boxes_are_filtered_and_evaluated(coco_set, tmp_path):
    _, images, coco, truth = coco_set
    image_id, (_, boxes) = next(iter(truth.items()))
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    detections = [{"image_id": image_id, "category_id": 1, "bbox": b.tolist(), "score": 0.8} for b in xywh]
    detections += [
        {"image_id": image_id, "category_id": 3, "bbox": [0, 0, 50, 50], "score": 0.99},  # a car
        {"image_id": image_id, "category_id": 1, "bbox": [0, 0, 50, 50], "score": 0.05},  # weak
        {"image_id": 999999999, "category_id": 1, "bbox": [0, 0, 50, 50], "score": 0.9},  # not in the set
    ]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(detections))
    kept = load_detections(path, coco, score_threshold=0.1)
    assert list(kept) == [image_id]
    assert np.allclose(kept[image_id][0], boxes, atol=1e-3) and np.allclose(kept[image_id][1], 0.8)
    assert len(load_detections(path, coco)[image_id][0]) == len(boxes) + 1  # official threshold 0.0

    _, results = evaluate(coco, images, OracleEstimator(truth, PoseConfig()), boxes=kept, progress=False, quiet=True)
    assert {r["image_id"] for r in results} == {image_id}
    assert all(r["score"] <= 0.8 for r in results)  # box score x keypoint score


def test_no_boxes_score_zero_without_reading_images(coco_set, tmp_path):
    _, _, coco, truth = coco_set
    stats, results = evaluate(coco, tmp_path, OracleEstimator(truth, PoseConfig()), boxes={}, progress=False, quiet=True)
    assert results == [] and stats["AP"] == 0.0 and stats["AR"] == 0.0


def test_gt_boxes_are_non_crowd_people_with_keypoints(coco_set):
    _, _, coco, _ = coco_set
    boxes = gt_boxes(coco)
    assert sum(len(b) for b, _ in boxes.values()) == 80
    for image_id, (b, s) in boxes.items():
        anns = gt_person_annotations(coco)[image_id]
        assert all(a["iscrowd"] == 0 and a["num_keypoints"] > 0 for a in anns)
        assert np.all(s == 1) and np.all(b[:, 2:] > b[:, :2])


# --- scoring and OKS-NMS -----------------------------------------------------------------------

def official_oks_iou(g, d, a_g, a_d):
    """microsoft/human-pose-estimation.pytorch lib/nms/nms.py `oks_iou` (no visibility threshold)."""
    sigmas = np.array(OKS_SIGMAS)
    variances = (sigmas * 2) ** 2
    xg, yg = g[0::3], g[1::3]
    ious = np.zeros(d.shape[0])
    for n_d in range(d.shape[0]):
        dx, dy = d[n_d, 0::3] - xg, d[n_d, 1::3] - yg
        e = (dx ** 2 + dy ** 2) / variances / ((a_g + a_d[n_d]) / 2 + np.spacing(1)) / 2
        ious[n_d] = np.sum(np.exp(-e)) / e.shape[0]
    return ious


def test_oks_matrix_matches_the_official_pairwise_oks():
    rng = np.random.default_rng(0)
    keypoints = rng.uniform(0, 100, (5, 17, 2))
    areas = rng.uniform(500, 5000, 5)
    flat = np.concatenate([keypoints, np.ones((5, 17, 1))], axis=2).reshape(5, -1)
    expected = np.stack([official_oks_iou(flat[i], flat, areas[i], areas) for i in range(5)])
    assert np.allclose(oks_matrix(keypoints, areas), expected, rtol=1e-12)
    assert np.allclose(np.diag(oks_matrix(keypoints, areas)), 1.0)


def test_oks_nms_removes_duplicates_and_keeps_distinct_people():
    rng = np.random.default_rng(1)
    a = rng.uniform(100, 200, (17, 2))
    b = a + 300  # another person far away
    keypoints = np.stack([a, a + 0.5, b, b + 0.3, a + 40])  # 0/1 and 2/3 duplicates; 4 overlaps 0 loosely
    scores = np.array([0.6, 0.9, 0.7, 0.5, 0.8])
    areas = np.full(5, 100.0 * 100.0)
    assert oks_matrix(keypoints, areas)[0, 4] < 0.9  # 40 px apart at this size: not a duplicate
    assert oks_nms(keypoints, scores, areas, threshold=0.9) == [1, 4, 2]
    assert oks_nms(keypoints[:0], scores[:0], areas[:0]) == []
    assert oks_nms(keypoints, scores, areas, threshold=1.0) == [1, 4, 2, 0, 3]  # nothing is above 1


def test_person_score_is_box_score_times_mean_confident_joint_score():
    keypoint_scores = np.array([[0.1, 0.5, 0.9], [0.1, 0.2, 0.15]])
    scores = person_scores(np.array([0.8, 0.9]), keypoint_scores, threshold=0.2)
    assert np.allclose(scores, [0.8 * 0.7, 0.0])  # 0.2 is not above the threshold


def test_image_results_rescores_then_suppresses():
    kp = np.random.default_rng(2).uniform(0, 100, (17, 2))
    keypoints = np.stack([kp, kp + 0.2]).astype(np.float32)
    keypoint_scores = np.stack([np.full(17, 0.9), np.full(17, 0.5)]).astype(np.float32)
    results = image_results(7, keypoints, keypoint_scores, np.array([0.5, 1.0]), np.full(2, 1e4), EvalConfig())
    # Rescored 0.5 x 0.9 = 0.45 and 1.0 x 0.5 = 0.5: the second comes first and suppresses its duplicate.
    assert len(results) == 1 and results[0]["score"] == pytest.approx(0.5)
    assert results[0]["keypoints"][:3] == pytest.approx([kp[0, 0] + 0.2, kp[0, 1] + 0.2, 0.5], abs=1e-3)


# --- files and the command line ------------------------------------------------------------------

def test_missing_inputs_raise_source_error(coco_set, tmp_path):
    annotations, images, coco, truth = coco_set
    estimator = OracleEstimator(truth, PoseConfig())
    with pytest.raises(SourceError, match="annotations"):
        evaluate(tmp_path / "nope.json", images, estimator, progress=False)
    with pytest.raises(SourceError, match="images folder"):
        evaluate(coco, tmp_path / "nope", estimator, progress=False)
    with pytest.raises(SourceError, match=r"36 of 36 images are missing"):
        evaluate(coco, tmp_path, estimator, progress=False)
    with pytest.raises(SourceError, match="detections"):
        load_detections(tmp_path / "dets.json", coco)
    (tmp_path / "bad.json").write_text('{"not": "a list"}')
    with pytest.raises(SourceError, match="not a COCO detection results file"):
        load_detections(tmp_path / "bad.json", coco)
    with pytest.raises(SourceError, match="not a COCO annotations file"):
        load_coco(tmp_path / "bad.json")


def test_write_results_is_atomic_and_leaves_no_temp_files(tmp_path):
    out = tmp_path / "results.json"
    write_results(out, [{"image_id": 1, "category_id": 1, "keypoints": [0.0] * 51, "score": 0.5}])
    write_results(out, [])
    assert json.loads(out.read_text()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    with pytest.raises(OutputError):
        write_results(tmp_path / "missing" / "results.json", [])
    previous = os.umask(0o027)
    try:
        write_results(out, [])
    finally:
        os.umask(previous)
    assert out.stat().st_mode & 0o777 == 0o640  # the user's umask, not mkstemp's private 0600


def test_arguments_drive_the_evaluation(coco_set, tmp_path, capsys):
    annotations, images, _, truth = coco_set
    out = tmp_path / "results.json"
    args = parse_args(["--annotations", str(annotations), "--images", str(images), "--flip",
                       "--decode", "quarter", "--batch", "4", "--out", str(out), "--no-progress"])
    config = pose_config(args)
    assert (config.flip, config.decode, config.max_batch) == (True, "quarter", 4)
    assert args.boxes is None and args.runtime == "auto" and args.box_threshold == 0.0
    stats = run(args, OracleEstimator(truth, config))
    assert stats["AP"] >= 0.97
    assert len(json.loads(out.read_text())) == 80
    printed = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets= 20 ]" in printed
    assert "boxes: ground truth; flip on; decode quarter" in printed

    # The results file exists now: refused without --overwrite, before any model is loaded.
    assert main(["--annotations", str(annotations), "--images", str(images), "--out", str(out)]) == 7
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--annotations", "a", "--images", "i", "--out", "o", "--boxes", "d.json", "--gt-boxes"])


def test_the_device_is_chosen_as_the_demo_chooses_it(coco_set, tmp_path, capsys, monkeypatch):
    import app.device
    from app.errors import DeviceError

    annotations, images, _, _ = coco_set
    out = tmp_path / "results.json"
    # torch as a CPU-only machine sees it (whatever this machine has): --device cuda cannot be honoured
    monkeypatch.setattr(app.device, "torch_availability",
                        lambda: app.device.Availability(torch_version="2.14.0", torch_cuda="13.0"))
    code = main(["--annotations", str(annotations), "--images", str(images), "--device", "cuda", "--out", str(out)])
    assert code == DeviceError.exit_code
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == ["error: --device cuda: torch sees no CUDA GPU (torch 2.14.0 is built for CUDA 13.0); check "
                      "that `nvidia-smi` lists the GPU and the driver supports that CUDA version, or use --device cpu"]
    assert not out.exists()
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--annotations", "a", "--images", "i", "--out", "o", "--device", "tpu"])
    assert exit_info.value.code == 2
    assert "argument --device: device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'" in capsys.readouterr().err


def test_command_line_reports_a_missing_file_in_one_line(tmp_path):
    env = dict(os.environ, YOLO_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-m", "app.evaluate", "--annotations", str(tmp_path / "missing.json"),
         "--images", str(tmp_path), "--out", str(tmp_path / "r.json")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == SourceError.exit_code
    assert done.stderr.strip().splitlines() == [f"error: annotations file {tmp_path / 'missing.json'} not found; "
                                                "pass --annotations person_keypoints_val2017.json"]


def test_main_runs_end_to_end_with_a_real_runner(coco_set, tmp_path, capsys):
    # The real command with a real (random-weight, small-input) SimpleBaseline through load_runner and
    # ONNX Runtime on three real images: proves the wiring, not the accuracy.
    import keras

    from models.simple_baseline import build_simple_baseline

    annotations, images, coco, truth = coco_set
    keras.utils.set_random_seed(0)
    model = build_simple_baseline(depth=50, num_joints=17, input_size=(128, 96))  # small crops: fast
    weights = tmp_path / "pose.weights.h5"
    model.save_weights(weights)
    (tmp_path / "pose.json").write_text(json.dumps({"source": "test", "depth": 50, "num_joints": 17,
                                                     "input_size": [128, 96]}))
    keep = sorted(truth)[:3]
    data = json.loads(Path(annotations).read_text())
    data["images"] = [i for i in data["images"] if i["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    subset = tmp_path / "subset.json"
    subset.write_text(json.dumps(data))
    out = tmp_path / "results.json"

    code = main(["--annotations", str(subset), "--images", str(images), "--weights", str(weights),
                 "--runtime", "onnx", "--device", "cpu", "--flip", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    results = json.loads(out.read_text())
    people = sum(len(truth[i][0]) for i in keep)
    assert 1 <= len(results) <= people
    assert all(len(r["keypoints"]) == 51 and np.isfinite(r["keypoints"]).all() for r in results)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in capsys.readouterr().out
