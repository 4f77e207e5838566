"""COCO keypoint evaluation (OKS AP) of the top-down estimator, as the official SimpleBaseline test.

    python -m app.evaluate --annotations person_keypoints_val2017.json --images val2017 \\
        [--weights FILE] [--boxes DETS.json | --gt-boxes] [--flip] [--decode dark|quarter] \\
        [--runtime auto|keras|onnx|openvino|torch] [--device auto|cpu|cuda[:N]|mps] \\
        [--precision auto|f32|bf16|f16] --out results.json

For each image: read it (one at a time, so full val2017 runs in constant memory), estimate every
person box, score each person as the official code (box score x mean of its keypoint scores above
0.2), drop duplicates with OKS-NMS at 0.9, and collect COCO keypoint results
[{image_id, category_id: 1, keypoints: [x, y, s] * 17, score}]. The results file is written
atomically and pycocotools prints the standard OKS AP table.

Boxes: `--gt-boxes` (the default) uses the annotated boxes of non-crowd persons with at least one
labelled keypoint (the official loader's "GT bbox" protocol); `--boxes` a COCO detection results
file (image_id, category_id, bbox xywh, score), keeping person boxes with score >= --box-threshold
(0.0 as the official evaluation).

`evaluate()` is the whole evaluation for any estimator (tests drive it with a ground-truth oracle);
only `main()` loads a model.
"""

import argparse
import contextlib
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from app.atomic import write_atomically
from app.device import choose_devices, device_argument
from app.errors import OutputError, SourceError, run_command
from app.native_noise import native_noise_filtered
from app.outputs import check_output_path
from app.pose import PoseConfig, PoseEstimator
from app.skeleton import OKS_SIGMAS

PERSON = 1  # COCO category id
STAT_NAMES = ("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL")


@dataclass
class EvalConfig:
    keypoint_threshold: float = 0.2  # official in_vis_thre: joints above it count in the person score
    oks_threshold: float = 0.9  # official oks_thre: OKS-NMS suppresses overlaps above it
    box_threshold: float = 0.0  # detections kept with score >= this (official image_thre)


def load_coco(annotations):
    """A pycocotools COCO from a path (or a COCO passed through). SourceError when it cannot be read."""
    from pycocotools.coco import COCO

    if isinstance(annotations, COCO):
        return annotations
    path = Path(annotations)
    if not path.is_file():
        raise SourceError(f"annotations file {path} not found; pass --annotations person_keypoints_val2017.json")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its loading steps
            coco = COCO(str(path))
    except (ValueError, KeyError, TypeError, AssertionError) as error:
        raise SourceError(f"{path} is not a COCO annotations file ({error.__class__.__name__})")
    if not {"images", "annotations"} <= set(coco.dataset):
        raise SourceError(f"{path} is not a COCO annotations file (no images or annotations)")
    return coco


def gt_person_annotations(coco) -> dict[int, list[dict]]:
    """{image_id: annotations} of the people the official GT-box evaluation estimates.

    Non-crowd persons with a box of positive size and at least one labelled keypoint (the official
    loader skips persons without keypoints: COCOeval ignores them anyway).
    """
    people: dict[int, list[dict]] = {}
    for image_id in sorted(coco.getImgIds()):
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id, catIds=[PERSON], iscrowd=False)):
            _, _, w, h = ann["bbox"]
            if w > 0 and h > 0 and max(ann.get("keypoints") or [0]) > 0:
                people.setdefault(image_id, []).append(ann)
    return people


def xywh_to_xyxy(boxes_xywh) -> np.ndarray:
    """COCO boxes (M, 4) x, y, w, h -> (M, 4) float32 x1, y1, x2, y2."""
    boxes = np.asarray(boxes_xywh, np.float32).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def gt_boxes(coco) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{image_id: (boxes (M, 4) xyxy float32, scores (M,) = 1)} from the ground truth."""
    return {
        image_id: (xywh_to_xyxy([ann["bbox"] for ann in anns]), np.ones(len(anns), np.float32))
        for image_id, anns in gt_person_annotations(coco).items()
    }


def load_detections(path, coco, score_threshold: float = 0.0) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{image_id: (boxes (M, 4) xyxy float32, scores (M,))} from a COCO detection results file.

    Keeps person detections (category_id 1) with score >= score_threshold on images of `coco`.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"detections file {path} not found; pass a COCO detection results json or --gt-boxes")
    try:
        detections = json.loads(path.read_text())
        rows = [(int(d["image_id"]), int(d["category_id"]), [float(v) for v in d["bbox"]], float(d["score"]))
                for d in detections]
    except (ValueError, KeyError, TypeError) as error:
        raise SourceError(f"{path} is not a COCO detection results file (a list of {{image_id, category_id, "
                          f"bbox, score}}): {error.__class__.__name__}")
    known = set(coco.getImgIds())
    grouped: dict[int, list] = {}
    for image_id, category, bbox, score in rows:
        if category == PERSON and score >= score_threshold and image_id in known and len(bbox) == 4:
            grouped.setdefault(image_id, []).append((bbox, score))
    return {
        image_id: (xywh_to_xyxy([b for b, _ in dets]), np.array([s for _, s in dets], np.float32))
        for image_id, dets in sorted(grouped.items())
    }


def person_scores(box_scores: np.ndarray, keypoint_scores: np.ndarray, threshold: float = 0.2) -> np.ndarray:
    """Official rescoring: box_scores (N,) x mean of keypoint_scores (N, K) above threshold (0 if none)."""
    confident = keypoint_scores > threshold
    count = confident.sum(axis=1)
    total = np.where(confident, keypoint_scores, 0).sum(axis=1)
    mean = np.divide(total, count, out=np.zeros_like(total, dtype=np.float64), where=count > 0)
    return (box_scores * mean).astype(np.float64)


def oks_matrix(keypoints: np.ndarray, areas: np.ndarray, sigmas=OKS_SIGMAS) -> np.ndarray:
    """Pairwise OKS (N, N) of people keypoints (N, K, 2) with areas (N,), as the official `oks_iou`.

    Every joint counts (the official NMS passes no visibility threshold); the scale is the mean of the
    two areas.
    """
    keypoints = np.asarray(keypoints, np.float64)
    areas = np.asarray(areas, np.float64)
    variances = (2 * np.asarray(sigmas, np.float64)) ** 2  # (K,)
    d2 = ((keypoints[:, None] - keypoints[None, :]) ** 2).sum(axis=-1)  # (N, N, K)
    scale = (areas[:, None] + areas[None, :]) / 2 + np.spacing(1)  # (N, N)
    return np.exp(-d2 / variances / scale[..., None] / 2).mean(axis=-1)


def oks_nms(keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray, threshold: float = 0.9,
            sigmas=OKS_SIGMAS) -> list[int]:
    """Greedy OKS-NMS, as the official lib/nms/nms.py `oks_nms` (pycocotools has none).

    keypoints (N, K, 2), scores (N,), areas (N,). Visit people by decreasing score; keep one, suppress
    every later person whose OKS with it is above threshold. Returns kept indices, best first.
    The OKS of all pairs is computed at once; the loop only walks the N people (greedy NMS is
    sequential: whether a person suppresses others depends on whether it was kept).
    """
    n = len(scores)
    if n == 0:
        return []
    oks = oks_matrix(keypoints, areas, sigmas)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    suppressed = np.zeros(n, bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= oks[i] > threshold
    return keep


def image_results(image_id: int, keypoints: np.ndarray, keypoint_scores: np.ndarray, box_scores: np.ndarray,
                  areas: np.ndarray, config: EvalConfig) -> list[dict]:
    """COCO keypoint results for one image's N people, rescored and OKS-NMSed.

    keypoints (N, K, 2) image pixels, keypoint_scores (N, K), box_scores (N,), areas (N,) of the padded
    crop box (the official scale for OKS-NMS).
    """
    scores = person_scores(box_scores, keypoint_scores, config.keypoint_threshold)
    keep = oks_nms(keypoints, scores, areas, config.oks_threshold)
    results = []
    for i in keep:
        triples = np.concatenate([keypoints[i], keypoint_scores[i][:, None]], axis=1)
        results.append({
            "image_id": int(image_id),
            "category_id": PERSON,
            "keypoints": [round(float(v), 3) for v in triples.ravel()],
            "score": float(scores[i]),
        })
    return results


def keypoint_stats(coco, results: list[dict], quiet: bool = False) -> dict[str, float]:
    """pycocotools OKS evaluation of results; prints its AP/AR table unless quiet. Returns STAT_NAMES -> value."""
    from pycocotools.cocoeval import COCOeval

    if not results:  # loadRes cannot load an empty list: nothing found is AP 0
        if not quiet:
            print("no people found: AP 0")
        return dict.fromkeys(STAT_NAMES, 0.0)
    out = io.StringIO() if quiet else sys.stdout
    with contextlib.redirect_stdout(out):
        # loadRes adds area/bbox/id keys to the dicts it gets: give it copies.
        detections = coco.loadRes([dict(r) for r in results])
        evaluator = COCOeval(coco, detections, "keypoints")
        evaluator.params.useSegm = None
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(STAT_NAMES, evaluator.stats)}


def evaluate(annotations, images_dir, estimator, boxes: dict | None = None, config: EvalConfig | None = None,
             progress: bool = True, quiet: bool = False) -> tuple[dict[str, float], list[dict]]:
    """Run `estimator` over a COCO keypoint set and score it with pycocotools.

    annotations: path or pycocotools COCO. images_dir: folder of the images' file_name.
    estimator: object with `estimate(frame_bgr, boxes) -> PoseResult` (app.pose.PoseEstimator).
    boxes: {image_id: (boxes (M, 4) xyxy, scores (M,))}, or None for the ground-truth boxes.
    Returns (stats {AP, AP50, ...}, results list in the COCO keypoint results format).
    """
    config = config or EvalConfig()
    coco = load_coco(annotations)
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise SourceError(f"images folder {images_dir} not found; pass --images with the val2017 folder")
    if boxes is None:
        boxes = gt_boxes(coco)
    work = [(image_id, b, s) for image_id, (b, s) in sorted(boxes.items()) if len(b)]
    paths = {image_id: images_dir / coco.imgs[image_id]["file_name"] for image_id, _, _ in work}
    missing = [path for path in paths.values() if not path.is_file()]
    if missing:  # check up front: a wrong folder should fail in a second, not after an hour
        raise SourceError(f"{len(missing)} of {len(paths)} images are missing from {images_dir} "
                          f"(first: {missing[0].name}); pass --images with the folder that holds them")

    results: list[dict] = []
    for image_id, image_boxes, box_scores in tqdm(work, desc="evaluate", unit="img", disable=not progress):
        frame = cv2.imread(str(paths[image_id]), cv2.IMREAD_COLOR)
        if frame is None:
            raise SourceError(f"cannot decode image {paths[image_id]}; the file is damaged or not an image")
        pose = estimator.estimate(frame, image_boxes)
        valid = pose.valid
        results += image_results(
            image_id, pose.keypoints[valid], pose.scores[valid], np.asarray(box_scores)[valid],
            areas=np.prod(pose.sizes[valid], axis=1), config=config,
        )
    return keypoint_stats(coco, results, quiet=quiet), results


def write_results(path, results: list[dict]) -> None:
    """Write the results json atomically: a temporary file in the same folder, then a rename."""
    path = Path(path)
    try:
        write_atomically(path, lambda temp: temp.write_text(json.dumps(results)))
    except OSError as error:
        raise OutputError(f"cannot write {path} ({error.strerror}); choose another output path") from None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotations", required=True, help="COCO keypoint annotations json")
    parser.add_argument("--images", required=True, help="folder of the annotation file's images")
    parser.add_argument("--weights", default=None, help="pose weights (default: app.runtime's default)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--boxes", default=None, help="COCO detection results json of person boxes")
    which.add_argument("--gt-boxes", action="store_true", help="annotated person boxes (the default)")
    parser.add_argument("--box-threshold", type=float, default=0.0,
                        help="keep detections with score >= this (official: 0.0)")
    parser.add_argument("--flip", action="store_true", help="flip test: average with the mirrored crop")
    parser.add_argument("--decode", choices=("dark", "quarter", "argmax"), default="dark")
    parser.add_argument("--runtime", choices=("auto", "keras", "onnx", "openvino", "torch"), default="auto")
    parser.add_argument("--device", type=device_argument, default="auto",
                        help="auto (a GPU torch sees, else the CPU), cpu, cuda, cuda:N or mps (as run_demo.py)")
    parser.add_argument("--precision", choices=("auto", "f32", "bf16", "f16"), default="auto",
                        help="pose model arithmetic (as run_demo.py): measure what bf16 costs in AP with "
                             "--runtime openvino --precision bf16 against the default")
    parser.add_argument("--batch", type=int, default=32, help="crops per model call")
    parser.add_argument("--out", required=True, help="COCO keypoint results json to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    return args


def pose_config(args: argparse.Namespace, udp: bool = False) -> PoseConfig:
    """The estimator settings the command line asks for; udp: the weights' JSON says they were
    trained with UDP's geometry."""
    return PoseConfig(flip=args.flip, decode=args.decode, max_batch=args.batch, udp=udp)


def check_inputs(args: argparse.Namespace):
    """Fail in a second on a wrong path, before a model loads: returns (coco, boxes or None)."""
    coco = load_coco(args.annotations)
    if not Path(args.images).is_dir():
        raise SourceError(f"images folder {args.images} not found; pass --images with the val2017 folder")
    boxes = load_detections(args.boxes, coco, args.box_threshold) if args.boxes else None
    check_output_path(args.out, overwrite=args.overwrite)
    return coco, boxes


def run(args: argparse.Namespace, estimator, inputs=None) -> dict[str, float]:
    """Evaluate `estimator` as the arguments say, write --out, print the table; returns the stats.

    inputs: what `check_inputs(args)` returned, when the caller already checked them.
    """
    coco, boxes = inputs or check_inputs(args)
    print(f"boxes: {args.boxes or 'ground truth'}; flip {'on' if args.flip else 'off'}; decode {args.decode}")
    stats, results = evaluate(coco, args.images, estimator, boxes=boxes,
                              config=EvalConfig(box_threshold=args.box_threshold), progress=not args.no_progress)
    write_results(args.out, results)
    print(f"wrote {len(results)} people to {args.out}")
    return stats


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter is no error of ours
    args = parse_args(argv)
    return run_command(lambda: _main(args), args.debug)


def _main(args: argparse.Namespace) -> int:
    inputs = check_inputs(args)
    # As run_demo.py: the device decides the Keras backend (torch's on a CUDA GPU, where TensorFlow
    # sees none), so it is chosen before anything imports Keras; DeviceError (exit 9) for a GPU that
    # cannot be used. On a CPU with a cached graph, Keras is then never imported.
    devices = choose_devices(args.device)
    if devices.note:
        print(devices.note, file=sys.stderr)
    with native_noise_filtered(enabled=not args.debug):
        from app.runtime import load_runner  # lazily: it imports ONNX Runtime / OpenVINO (Keras only if needed)

        from app.weights import read_sidecar, resolve_weights

        weights = resolve_weights(args.weights)  # MissingWeightsError / WeightsError: one line
        udp = read_sidecar(weights)["udp"]
        runner = load_runner(weights, runtime=args.runtime, device=devices.pose_device,
                             precision=args.precision)
    print(f"pose model: {runner.engine}, {runner.device}, {runner.precision}{', UDP geometry' if udp else ''}")
    for note in getattr(runner, "notes", ()):
        print(note)
    estimator = PoseEstimator(runner, pose_config(args, udp))
    run(args, estimator, inputs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
