"""Crop geometry: boxes -> centre/size, affines both ways, warping and normalisation."""

import cv2
import numpy as np
import pytest

from app.crop import (
    IMAGENET_MEAN, IMAGENET_STD, boxes_to_center_scale, crop_transforms, finite_boxes, normalize,
    transform_points, warp_crops,
)

INPUT = (256, 192)  # (H, W)
HEATMAP = (64, 48)

# Every kind of box the pipeline can meet: tall, wide, square, partly or wholly outside a 640 x 480
# frame, tiny, zero and negative size, very large.
BOXES = np.array([
    [100, 50, 180, 400],      # tall
    [10, 200, 600, 260],      # wide
    [300, 300, 400, 400],     # square
    [-80, -40, 60, 120],      # partly outside (top-left)
    [600, 420, 900, 700],     # partly outside (bottom-right)
    [2000, 2000, 2100, 2300],  # wholly outside
    [320.3, 240.7, 320.6, 240.9],  # sub-pixel
    [50, 50, 50, 50],         # zero size
    [200, 200, 150, 120],     # negative size (x2 < x1)
    [-5000, -3000, 9000, 8000],  # far larger than the frame
], np.float32)


def test_center_and_size_of_known_box():
    centers, sizes = boxes_to_center_scale(np.array([[0, 0, 100, 100]], np.float32))
    # A square is wider than 3:4, so the height grows to 100 / 0.75, then both sides x 1.25.
    assert np.allclose(centers, [[50, 50]])
    assert np.allclose(sizes, [[125, 100 / 0.75 * 1.25]])


def test_sizes_have_model_aspect_ratio_and_only_grow():
    centers, sizes = boxes_to_center_scale(BOXES)
    assert np.allclose(sizes[:, 0] / sizes[:, 1], 192 / 256, rtol=1e-12)
    w = np.maximum(BOXES[:, 2] - BOXES[:, 0], 1.0)
    h = np.maximum(BOXES[:, 3] - BOXES[:, 1], 1.0)
    # Never shrinks a side, and keeps one side exactly at 1.25 x the (1 px minimum) box side.
    assert np.all(sizes[:, 0] >= 1.25 * w - 1e-4) and np.all(sizes[:, 1] >= 1.25 * h - 1e-4)
    exact = np.isclose(sizes[:, 0], 1.25 * w, rtol=1e-6) | np.isclose(sizes[:, 1], 1.25 * h, rtol=1e-6)
    assert exact.all()
    assert np.all(sizes >= 1.0)
    assert np.allclose(centers, (BOXES[:, :2] + BOXES[:, 2:]) / 2, atol=1e-4)


@pytest.mark.parametrize("output_size", [INPUT, HEATMAP])
def test_box_centre_maps_to_crop_centre(output_size):
    centers, sizes = boxes_to_center_scale(BOXES)
    forward, _ = crop_transforms(centers, sizes, output_size)
    mapped = transform_points(centers[:, None, :], forward)[:, 0]
    h, w = output_size
    assert np.allclose(mapped, [w / 2, h / 2], atol=1e-3)


@pytest.mark.parametrize("udp", [False, True])
@pytest.mark.parametrize("output_size", [INPUT, HEATMAP])
def test_points_round_trip_within_a_thousandth_of_a_pixel(output_size, udp):
    rng = np.random.default_rng(1)
    centers, sizes = boxes_to_center_scale(BOXES)
    forward, inverse = crop_transforms(centers, sizes, output_size, udp=udp)
    # Points inside and well outside each box, in image pixels.
    spread = rng.uniform(-1.5, 1.5, (len(BOXES), 17, 2))
    points = (centers[:, None, :] + spread * sizes[:, None, :]).astype(np.float32)
    back = transform_points(transform_points(points, forward), inverse)
    # 1e-3 px, or two float32 steps for the points tens of thousands of pixels out (the huge box).
    assert np.all(np.abs(back - points) <= np.maximum(1e-3, 2 * np.spacing(np.abs(points))))


def test_heatmap_pixel_j_sits_on_input_pixel_4j():
    centers, sizes = boxes_to_center_scale(BOXES)
    to_input, _ = crop_transforms(centers, sizes, INPUT)
    to_heatmap, _ = crop_transforms(centers, sizes, HEATMAP)
    points = np.random.default_rng(2).uniform(-100, 700, (len(BOXES), 17, 2)).astype(np.float32)
    in_input = transform_points(points, to_input).astype(np.float64)
    in_heatmap = transform_points(points, to_heatmap).astype(np.float64)
    assert np.allclose(in_input, 4 * in_heatmap, atol=2e-3)


def official_udp_warp_matrix(center, size, output_size):
    """MMPose v0.29.0 TopDownAffine(use_udp=True): get_warp_matrix(0, center * 2, image_size - 1,
    scale * 200) with theta 0, transcribed (float32, as it is written). size: (w, h) = scale * 200."""
    size_input = np.asarray(center, np.float64) * 2
    size_dst = np.array([output_size[1], output_size[0]], np.float64) - 1
    matrix = np.zeros((2, 3), np.float32)
    scale_x, scale_y = size_dst[0] / size[0], size_dst[1] / size[1]
    matrix[0, 0] = scale_x
    matrix[0, 2] = scale_x * (-0.5 * size_input[0] + 0.5 * size[0])
    matrix[1, 1] = scale_y
    matrix[1, 2] = scale_y * (-0.5 * size_input[1] + 0.5 * size[1])
    return matrix


def official_udp_transform_preds(coords, center, size, output_size):
    """MMPose v0.29.0 transform_preds(coords, center, scale, [W, H], use_udp=True), transcribed."""
    scale_x = size[0] / (output_size[1] - 1.0)
    scale_y = size[1] / (output_size[0] - 1.0)
    out = np.array(coords, np.float64)
    out[:, 0] = coords[:, 0] * scale_x + center[0] - size[0] * 0.5
    out[:, 1] = coords[:, 1] * scale_y + center[1] - size[1] * 0.5
    return out


def test_the_udp_geometry_is_mmposes():
    centers, sizes = boxes_to_center_scale(BOXES[:7])  # the finite, non-huge ones: float32 matrices
    forward, _ = crop_transforms(centers, sizes, INPUT, udp=True)
    _, to_image = crop_transforms(centers, sizes, HEATMAP, udp=True)
    points = np.random.default_rng(3).uniform(-2, 64, (len(centers), 17, 2))
    for i in range(len(centers)):
        official = official_udp_warp_matrix(centers[i], sizes[i], INPUT)
        np.testing.assert_allclose(forward[i], official, rtol=1e-6, atol=1e-4)
        expected = official_udp_transform_preds(points[i], centers[i], sizes[i], HEATMAP)
        np.testing.assert_allclose(transform_points(points[i:i + 1], to_image[i:i + 1])[0], expected, atol=1e-3)
    # The box's edges land on the first and last pixel centres, of the input and of the heatmap.
    for size, matrices in ((INPUT, forward), (HEATMAP, crop_transforms(centers, sizes, HEATMAP, udp=True)[0])):
        corners = np.stack([centers - sizes / 2, centers + sizes / 2], axis=1)  # (N, 2, 2)
        mapped = transform_points(corners, matrices)
        np.testing.assert_allclose(mapped[:, 0], 0, atol=1e-3)
        np.testing.assert_allclose(mapped[:, 1], np.broadcast_to([size[1] - 1, size[0] - 1], (len(centers), 2)), atol=1e-3)


def test_non_finite_boxes_are_flagged_with_finite_placeholders():
    boxes = np.array([[0, 0, 10, 10], [np.nan, 0, 10, 10], [0, np.inf, 10, 10], [0, 0, -np.inf, 5]], np.float32)
    assert finite_boxes(boxes).tolist() == [True, False, False, False]
    centers, sizes = boxes_to_center_scale(boxes)
    assert np.isfinite(centers).all() and np.isfinite(sizes).all() and (sizes > 0).all()
    forward, inverse = crop_transforms(centers, sizes, INPUT)
    assert np.isfinite(forward).all() and np.isfinite(inverse).all()


def test_warp_samples_the_image_where_the_affine_says():
    # A linear ramp survives bilinear interpolation exactly, so each crop pixel must hold the ramp's
    # value at the image point the inverse affine sends it to (up to uint8 rounding).
    h, w = 480, 640
    ys, xs = np.mgrid[0:h, 0:w]
    ramp = (xs * 0.25 + ys * 0.2).astype(np.float64)  # 0 .. 255.6
    frame = np.repeat(np.clip(np.round(ramp), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    boxes = np.array([[200, 100, 300, 350], [250, 200, 330, 260]], np.float32)
    centers, sizes = boxes_to_center_scale(boxes)
    forward, inverse = crop_transforms(centers, sizes, INPUT)
    crops = warp_crops(frame, forward, INPUT)
    assert crops.shape == (2, 256, 192, 3) and crops.dtype == np.uint8
    v, u = np.mgrid[0:256, 0:192]
    grid = np.stack([u, v], axis=-1).reshape(1, -1, 2).repeat(2, axis=0).astype(np.float32)
    source = transform_points(grid, inverse).astype(np.float64)  # (2, 256*192, 2) image pixels
    inside = (source[..., 0] >= 0) & (source[..., 0] <= w - 1) & (source[..., 1] >= 0) & (source[..., 1] <= h - 1)
    expected = source[..., 0] * 0.25 + source[..., 1] * 0.2
    got = crops[..., 0].reshape(2, -1).astype(np.float64)
    assert inside.mean() > 0.9
    assert np.abs(got - expected)[inside].max() <= 1.0


def test_warp_is_cv2_warp_affine_of_the_frame_bit_for_bit():
    # warp_crops widens only the frame's footprint to BGRA (app.crop._footprint) and warps 4-channel
    # images: every crop must still be exactly the 3-channel warpAffine of the whole frame, for
    # boxes inside, across and outside the frame, frames down to 1 px, and rotated matrices too.
    rng = np.random.default_rng(17)
    for trial in range(300):
        height, width = (int(v) for v in rng.integers(1, 700, 2))
        frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        corners = rng.uniform(-0.3, 1.3, (int(rng.integers(1, 4)), 2, 2)) * [width, height]
        boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
        size = INPUT if trial % 2 else (64, 48)
        forward, _ = crop_transforms(*boxes_to_center_scale(boxes), size)
        if trial % 5 == 0:
            angle = rng.uniform(0, 2 * np.pi)
            rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            forward[:, :, :2] = rotation @ forward[:, :, :2]
        expected = np.stack([cv2.warpAffine(frame, matrix, size[::-1], flags=cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_CONSTANT, borderValue=0) for matrix in forward])
        np.testing.assert_array_equal(warp_crops(frame, forward, size), expected, err_msg=f"trial {trial}")


def test_warp_outside_the_frame_is_black_and_never_fails():
    frame = np.full((120, 160, 3), 200, np.uint8)
    boxes = np.concatenate([BOXES, [[1e6, 1e6, 1e6 + 50, 1e6 + 80]]]).astype(np.float32)
    centers, sizes = boxes_to_center_scale(boxes)
    forward, _ = crop_transforms(centers, sizes, INPUT)
    crops = warp_crops(frame, forward, INPUT)
    assert crops.shape == (len(boxes), 256, 192, 3)
    assert crops[5].max() == 0 and crops[-1].max() == 0  # wholly outside: black
    assert crops[3].min() == 0 and crops[3].max() == 200  # box over the top-left corner: part black
    assert warp_crops(frame, np.zeros((0, 2, 3)), INPUT).shape == (0, 256, 192, 3)


def test_normalize_is_rgb_imagenet():
    crops = np.zeros((1, 4, 4, 3), np.uint8)
    crops[..., 0] = 255  # blue in BGR
    crops[..., 2] = 51  # some red
    out = normalize(crops)
    assert out.dtype == np.float32 and out.shape == (1, 4, 4, 3)
    expected = (np.array([51, 0, 255]) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD  # R, G, B
    assert np.allclose(out[0, 0, 0], expected, atol=1e-6)


def test_normalize_is_the_formula_bit_for_bit_on_every_value_and_layout():
    # The lookup table gives exactly what (x / 255 - mean) / std gives in float32, for every uint8
    # value in every channel, on a batch and on a non-contiguous one (a mirrored view, as the flip test).
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, 256, 192, 3), dtype=np.uint8)
    assert all(len(np.unique(crops[..., c])) == 256 for c in range(3))
    for batch in (crops, crops[:, :, ::-1], crops[:1], crops[:0]):
        formula = (batch[..., ::-1].astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        out = normalize(batch)
        assert out.dtype == np.float32 and out.flags.c_contiguous
        np.testing.assert_array_equal(out, formula)
    with pytest.raises(TypeError):
        normalize(crops.astype(np.float32))
