"""A second real keypoint track, from another model, to check the smoothers on data they were not tuned on.

    python -m benchmarks.peer_track --out /tmp/dancer_yolo11pose.npz
    python -m benchmarks.smoothing_report --tracks /tmp/dancer_yolo11pose.npz

Runs the peer model ../shared/assets/peers/yolo11n-pose_int8.tflite (Ultralytics YOLO11n-pose,
LiteRT int8, 256 x 256 input, output 1 x 56 x 1344: per anchor cx, cy, w, h, person score, then 17
x (x, y, visibility), all normalised to the input) on every frame of dancer.avi independently and
writes `kpts` (T, 17, 3) in image pixels with the visibility as the score, `fps`, and the frames
of a still and a moving segment (`still`, `moving`, the report's issue-12 harness reads them).

The export's person-score channel is NaN, so Ultralytics' own decoding (which ranks and filters by
it) finds nobody; with one dancer in view, the anchor whose keypoints are the most visible on
average is her. The frame is letterboxed as Ultralytics does (scaled to fit, grey 114 padding,
centred).
"""

import argparse
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
SIZE = 256


def letterbox(frame: np.ndarray, size: int = SIZE) -> tuple[np.ndarray, float, tuple[int, int]]:
    """BGR (H, W, 3) -> RGB float (1, size, size, 3) in [0, 1], the scale and the (x, y) padding."""
    height, width = frame.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = round(width * scale), round(height * scale)
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    canvas = np.full((size, size, 3), 114, np.uint8)
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return canvas[None, ..., ::-1].astype(np.float32) / 255.0, scale, (pad_x, pad_y)


def best_person(output: np.ndarray, scale: float, padding: tuple[int, int]) -> np.ndarray:
    """(56, A) raw output -> (17, 3) x, y pixels and visibility of the anchor with the most visible joints."""
    joints = output[5:].reshape(17, 3, -1)  # (17, xyv, A)
    best = int(np.nanargmax(np.nanmean(joints[:, 2], axis=0)))
    person = joints[:, :, best].astype(np.float64).copy()
    person[:, 0] = (person[:, 0] * SIZE - padding[0]) / scale
    person[:, 1] = (person[:, 1] * SIZE - padding[1]) / scale
    return person


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--video", type=Path, default=ASSETS / "videos" / "dancer.avi")
    parser.add_argument("--model", type=Path, default=ASSETS / "peers" / "yolo11n-pose_int8.tflite")
    parser.add_argument("--out", type=Path, required=True)
    # dancer.avi: she stands still in frames ~1060-1175 (stillest, by the median joint speed of
    # this track: 1105-1168) and dances before it.
    parser.add_argument("--still", type=int, nargs=2, default=(1105, 1168))
    parser.add_argument("--moving", type=int, nargs=2, default=(100, 1060))
    args = parser.parse_args()
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(args.model), num_threads=1)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    capture = cv2.VideoCapture(str(args.video))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    track, width = [], 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        width = frame.shape[1]
        image, scale, padding = letterbox(frame)
        interpreter.set_tensor(input_index, image)
        interpreter.invoke()
        track.append(best_person(interpreter.get_tensor(output_index)[0], scale, padding))
    capture.release()
    np.savez(args.out, kpts=np.stack(track).astype(np.float32), fps=fps, still=np.array(args.still),
             moving=np.array(args.moving), width=width)
    print(f"wrote {args.out}: {len(track)} frames at {fps:g} fps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
