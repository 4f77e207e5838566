"""PoseEstimator end to end with a ground-truth oracle in place of the network."""

import numpy as np
import pytest
from oracle import OracleRunner

from app.crop import IMAGENET_MEAN, IMAGENET_STD
from app.pose import PoseConfig, PoseEstimator, PoseResult
from app.skeleton import NUM_KEYPOINTS as K

FRAME_H, FRAME_W = 480, 640


def scene(n: int, seed: int = 0):
    """A noise frame with n person boxes and ground truth (n, K, 3) inside the boxes, all visible."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (FRAME_H, FRAME_W, 3), dtype=np.uint8)  # mirrored crops differ from the originals
    x1 = rng.uniform(0, FRAME_W - 150, n)
    y1 = rng.uniform(0, FRAME_H - 250, n)
    w, h = rng.uniform(40, 150, n), rng.uniform(80, 250, n)
    boxes = np.stack([x1, y1, x1 + w, y1 + h], axis=1).astype(np.float32)
    xy = boxes[:, None, :2] + rng.uniform(0, 1, (n, K, 2)) * (boxes[:, None, 2:] - boxes[:, None, :2])
    truth = np.concatenate([xy, np.full((n, K, 1), 2.0)], axis=2)
    return frame, boxes, truth


def heatmap_pixels(result: PoseResult) -> np.ndarray:
    """Image pixels per heatmap pixel, (N, 1, 1): the crop width over 48."""
    return (result.sizes[:, 0] / 48)[:, None, None]


@pytest.mark.parametrize("decode, bound", [("dark", 0.05), ("quarter", 0.3)])
def test_oracle_keypoints_come_back_to_the_ground_truth(decode, bound):
    frame, boxes, truth = scene(5)
    runner = OracleRunner(truth, boxes)
    result = PoseEstimator(runner, PoseConfig(decode=decode)).estimate(frame, boxes)
    assert result.keypoints.shape == (5, K, 2) and result.keypoints.dtype == np.float32
    error = np.linalg.norm(result.keypoints - truth[..., :2], axis=-1, keepdims=True) / heatmap_pixels(result)
    # Errors in heatmap pixels, the resolution the decode bounds are stated in.
    assert error.mean() <= bound
    assert np.all(result.scores > 0.5) and result.valid.all()
    assert runner.calls == [(5, False)]


def test_flip_test_leaves_the_official_quarter_pixel_residual():
    # flip_back's whole-pixel shift puts the mirrored prediction 0.25 heatmap px right of the
    # original (the exact correction would be 0.75, not 1); the average sits 0.125 px right.
    # Without the shift it would be 0.375 px left, with the shift the wrong way 0.875 px left.
    frame, boxes, truth = scene(6, seed=1)
    runner = OracleRunner(truth, boxes)
    result = PoseEstimator(runner, PoseConfig(flip=True)).estimate(frame, boxes)
    offset = (result.keypoints - truth[..., :2]) / heatmap_pixels(result)
    assert abs(offset[..., 0].mean() - 0.125) <= 0.02
    assert abs(offset[..., 1].mean()) <= 0.02
    assert runner.calls == [(6, False), (6, True)]


def test_a_wrong_flip_pair_is_caught():
    frame, boxes, truth = scene(6, seed=1)
    no_swap = list(range(K))  # the double's world forgets to swap left and right in the mirror
    runner = OracleRunner(truth, boxes, mirror_index=no_swap)
    result = PoseEstimator(runner, PoseConfig(flip=True)).estimate(frame, boxes)
    error = np.linalg.norm(result.keypoints - truth[..., :2], axis=-1) / heatmap_pixels(result)[..., 0]
    # Each left/right map holds both sides' peaks at half height, so about half of the 16 paired
    # joints land on the other side of the body (the correct flip stays within 0.13 px).
    assert error.mean() > 1.0
    assert (error > 1.0).mean() > 0.2


def test_runner_gets_chunks_of_max_batch_never_one_call_per_person():
    frame, boxes, truth = scene(70, seed=2)
    runner = OracleRunner(truth, boxes)
    result = PoseEstimator(runner, PoseConfig(max_batch=32)).estimate(frame, boxes, return_heatmaps=True)
    assert runner.calls == [(32, False), (32, False), (6, False)]
    assert result.heatmaps.shape == (70, 64, 48, K)
    error = np.linalg.norm(result.keypoints - truth[..., :2], axis=-1, keepdims=True) / heatmap_pixels(result)
    assert error.mean() <= 0.05  # rows stay in box order across chunks

    runner = OracleRunner(truth, boxes)
    PoseEstimator(runner, PoseConfig(max_batch=32, flip=True)).estimate(frame, boxes)
    assert runner.calls == [(32, False), (32, True), (32, False), (32, True), (6, False), (6, True)]


def test_zero_boxes_give_empty_results_without_calling_the_runner():
    def runner(batch):
        raise AssertionError("runner called with no boxes")

    frame = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
    result = PoseEstimator(runner).estimate(frame, np.zeros((0, 4), np.float32), return_heatmaps=True)
    assert result.keypoints.shape == (0, K, 2) and result.scores.shape == (0, K)
    assert result.heatmaps.shape == (0, 64, 48, K)
    assert result.centers.shape == (0, 2) and result.sizes.shape == (0, 2) and result.valid.shape == (0,)
    assert PoseEstimator(runner).estimate(frame, []).heatmaps is None


def test_runner_input_is_normalised_rgb():
    seen = []

    def runner(batch):
        seen.append(batch)
        return np.zeros((len(batch), 64, 48, K), np.float32)

    frame = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
    frame[..., 2] = 255  # pure red in BGR
    PoseEstimator(runner).estimate(frame, np.array([[280, 180, 360, 300]], np.float32))
    batch = seen[0]
    assert batch.shape == (1, 256, 192, 3) and batch.dtype == np.float32
    red = (np.array([1.0, 0.0, 0.0]) - IMAGENET_MEAN) / IMAGENET_STD
    assert np.allclose(batch[0, 128, 96], red, atol=1e-5)


def test_degenerate_and_non_finite_boxes_are_handled():
    frame, boxes, truth = scene(3, seed=3)
    bad = np.array([
        [np.nan, 10, 50, 90],        # not finite: flagged, not sent to the runner
        [-300, -200, -100, -50],     # wholly outside the frame
        [600, 400, 900, 700],        # partly outside
        [100, 100, 100, 100],        # zero size
        [200, 200, 150, 120],        # negative size
        [50, 50, 50.2, 50.3],        # sub-pixel
    ], np.float32)
    all_boxes = np.concatenate([boxes[:1], bad, boxes[1:]])
    all_truth = np.concatenate([truth[:1], np.repeat(truth[:1], len(bad), axis=0), truth[1:]])
    runner = OracleRunner(all_truth, all_boxes)
    result = PoseEstimator(runner).estimate(frame, all_boxes, return_heatmaps=True)
    assert runner.calls == [(len(all_boxes) - 1, False)]
    assert result.valid.tolist() == [True, False] + [True] * 7
    for field in (result.keypoints, result.scores, result.heatmaps, result.centers, result.sizes):
        assert np.isfinite(field).all()
    assert np.all(result.scores[1] == 0) and np.all(result.keypoints[1] == 0)
    assert np.all(result.heatmaps[1] == 0)
    # The real people around the odd boxes still come back where they are.
    people = [0, 7, 8]
    error = np.linalg.norm(result.keypoints[people] - truth[..., :2], axis=-1, keepdims=True)
    assert (error / heatmap_pixels(result)[people]).mean() <= 0.05


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        PoseEstimator(lambda batch: batch, PoseConfig(decode="mean"))
    with pytest.raises(ValueError):
        PoseEstimator(lambda batch: batch, PoseConfig(max_batch=0))


def test_a_runner_that_takes_uint8_gets_the_crops_and_the_same_keypoints():
    # A runner that normalises on its device gets the uint8 BGR crops; normalising them as
    # app.crop.normalize does gives what a float32 runner gets, so the keypoints are the same.
    from app.crop import normalize

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 110, 220], [150, 30, 300, 230]], np.float32)
    seen = {}

    def heatmaps_of(batch):
        # Heatmaps that depend on every input value, so a wrong input changes the keypoints.
        pooled = batch.reshape(len(batch), 64, 4, 48, 4, 3).mean(axis=(2, 4))  # (N, 64, 48, 3)
        return np.concatenate([pooled] * 6, axis=-1)[..., :17].astype(np.float32)

    class FloatRunner:
        input_size = (256, 192)

        def __call__(self, batch):
            seen["float32"] = batch
            return heatmaps_of(batch)

    class Uint8Runner(FloatRunner):
        input_dtype = "uint8"

        def __call__(self, batch):
            seen["uint8"] = batch
            return heatmaps_of(normalize(batch))

    as_float = PoseEstimator(FloatRunner()).estimate(frame, boxes)
    as_uint8 = PoseEstimator(Uint8Runner()).estimate(frame, boxes)
    assert seen["uint8"].dtype == np.uint8 and seen["float32"].dtype == np.float32
    np.testing.assert_array_equal(normalize(seen["uint8"]), seen["float32"])
    np.testing.assert_array_equal(as_uint8.keypoints, as_float.keypoints)


def test_a_udp_model_comes_back_to_the_ground_truth_only_with_its_geometry():
    # The oracle renders what a network trained with UDP's geometry gives: the same heatmaps decoded
    # with the SimpleBaseline geometry land up to 3 input pixels off (the ends of the rows no longer
    # line up), which is the error a UDP checkpoint converted without its flag would make.
    frame, boxes, truth = scene(5, seed=2)
    errors = {}
    for udp in (True, False):
        runner = OracleRunner(truth, boxes, udp=True)
        result = PoseEstimator(runner, PoseConfig(udp=udp)).estimate(frame, boxes)
        errors[udp] = np.linalg.norm(result.keypoints - truth[..., :2], axis=-1, keepdims=True) / heatmap_pixels(result)
    assert errors[True].mean() <= 0.05
    assert errors[False].mean() >= 0.25


def test_a_udp_flip_test_has_no_residual_shift():
    # Under UDP a mirrored input gives the exactly mirrored heatmap, so flip_back must not shift it
    # (MMPose's UDP configs: shift_heatmap=False); the average then sits on the truth, where the
    # SimpleBaseline flip test keeps its 0.125 px residual (test above). Shifting would put it 0.5 px right.
    frame, boxes, truth = scene(6, seed=1)
    runner = OracleRunner(truth, boxes, udp=True)
    result = PoseEstimator(runner, PoseConfig(flip=True, udp=True)).estimate(frame, boxes)
    offset = (result.keypoints - truth[..., :2]) / heatmap_pixels(result)
    assert abs(offset[..., 0].mean()) <= 0.02
    assert abs(offset[..., 1].mean()) <= 0.02
    assert runner.calls == [(6, False), (6, True)]
