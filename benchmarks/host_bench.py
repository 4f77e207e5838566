"""The host ceiling: what a frame costs the host when both networks are instant (issue 17).

    python -m benchmarks.host_bench                       # this tree: dancer 1 person, street 5 people
    python -m benchmarks.host_bench --compare 664ceef     # and a git revision, side by side, alternated

The product pipeline as the demo builds it (run_demo.py: PosePipeline with default settings, the
default PoseConfig, live Kalman smoothing) with stand-ins for the two networks:
- the detector replays boxes the real shared LiteRT detector found on these very frames (recorded
  once into out/host_bench/, git-ignored; frames are looked up by their content, so the replay
  gives the detector's answer for whatever frame it is handed);
- the pose model is instant: it returns Gaussian heatmaps (sigma 2, peaks 0.6-0.95, noise 0.01) at
  a plausible standing pose jittered by 0.7 heatmap px, drawn from a bank computed at start-up, so
  decoding, smoothing, box carrying and drawing do real work and the model costs one array copy.

It times each frame's stages, those a demo with a window and `--output` runs, in two passes (the
video read first): the pipeline's over every frame, then the rest over every frame, so that no
stage's CPU time takes in another thread's (the reader's, the video writer's):
  pipeline: detect (replay), crop (warp + normalise), model (the copy), decode, track, smooth (live)
  offline   the offline smoothing stage (app.offline), which the demo uses when it writes a file
  draw      app.views.annotate: skeletons and boxes, what --output records
  hud       app.views.compose_view: what the window shows (HUD on the annotated frame)
  write     app.outputs.VideoOutput.write of the annotated frame (.mp4)
The stand-in runner is measured both ways (--runner-input): taking uint8 crops, as TorchRunner on a
CUDA device does (the accelerator path: crops normalised there), and float32 ones, as the CPU
engines do (normalised on the host, in `crop`).
`host` is their sum: the host work of one frame, which no accelerator removes; `process` the time
of PosePipeline.process alone (its stages and their glue: what issue 17 calls the per-frame host
time). Reading the video is timed apart (`read`) and left out. By default every stage is timed in
CPU time of the process (--clock cpu): on this shared 2-core machine the wall times mostly measure
the wait for a core. `demo` is always wall time. `demo` is the wall time per frame of app.demo.run
(headless, --output) with the same stand-ins: the product's own threads, so stages overlap there.

--compare REV[,REV2] runs this same script on the files of each REV (`git archive` into
out/host_bench/, the script copied in) in a subprocess, alternating with this tree, --repeats
times each, and prints the median of each stage and the ratio this tree / REV (under 1: faster).
Every run is its own process.
"""

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import app  # noqa: F401  (first: keeps triton out, see app/__init__.py)
from benchmarks.machine import cpu_model  # noqa: E402

os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
CACHE = ROOT / "out" / "host_bench"
PIPELINE_STAGES = ("detect", "crop", "model", "decode", "track", "smooth")  # PosePipeline.process's own
STAGES = PIPELINE_STAGES + ("offline", "draw", "hud", "write")
# name -> (video, --max-people): one person, and five people of a crowded street.
SCENES = {"dancer-1": ("videos/dancer.avi", 100), "street-5": ("videos/street.avi", 5)}

# A person standing, facing the camera, in heatmap pixels of a 64 x 48 map (the crop's 1.25 padding
# leaves a margin): COCO-17 order, the person's left on the image's right.
STANDING_POSE = np.array([
    (24, 10), (25.5, 9), (22.5, 9), (27, 10), (21, 10),  # nose, eyes, ears
    (30, 17), (18, 17), (32, 26), (16, 26), (33, 34), (15, 34),  # shoulders, elbows, wrists
    (28, 35), (20, 35), (28.5, 45), (19.5, 45), (29, 55), (19, 55),  # hips, knees, ankles
], np.float64)


def frame_key(image: np.ndarray) -> str:
    """A frame's identity for the replay: a hash of every 8th pixel (cheap; frames of a video differ)."""
    return hashlib.blake2b(np.ascontiguousarray(image[::8, ::8]).tobytes(), digest_size=12).hexdigest()


def cache_path(scene: str, frames: int) -> Path:
    return CACHE / f"{scene}_{frames}.npz"


def record_boxes(scene: str, frames: int, detector_path: str, assets: Path) -> Path:
    """Runs the real detector (as run_demo configures it) over the scene's first frames, once."""
    path = cache_path(scene, frames)
    if path.exists():
        return path
    from app.detector import DetectorConfig, PersonDetector
    from app.sources import open_source

    video, max_people = SCENES[scene]
    detector = PersonDetector(DetectorConfig(model=detector_path, max_det=max_people))
    keys, boxes, scores = [], [], []
    print(f"recording the detector's boxes on {frames} frames of {video} (once) ...", file=sys.stderr)
    with open_source(str(assets / video)) as source:
        for frame in source:
            if len(keys) >= frames:
                break
            b, s = detector.detect(frame.image)
            keys.append(frame_key(frame.image))
            boxes.append(np.asarray(b, np.float32).reshape(-1, 4))
            scores.append(np.asarray(s, np.float32).reshape(-1))
    CACHE.mkdir(parents=True, exist_ok=True)
    counts = np.array([len(b) for b in boxes])
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, keys=np.array(keys), counts=counts, boxes=np.concatenate(boxes), scores=np.concatenate(scores))
    tmp.replace(path)
    return path


class ReplayDetector:
    """`detect(frame)` -> the recorded (boxes (N, 4), scores (N,)) of that frame."""

    def __init__(self, path: Path):
        data = np.load(path)
        ends = np.cumsum(data["counts"])
        starts = ends - data["counts"]
        self._answers = {str(key): (data["boxes"][a:b], data["scores"][a:b])
                         for key, a, b in zip(data["keys"], starts, ends)}
        self.calls = 0

    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        boxes, scores = self._answers[frame_key(frame)]  # KeyError: a frame that was not recorded
        return boxes.copy(), scores.copy()


class InstantPoseModel:
    """Runner stand-in: batch (N, 256, 192, 3) -> (N, 64, 48, 17) float32 from a precomputed bank.

    input_dtype "uint8": it takes the uint8 BGR crops, as TorchRunner does on a CUDA device (it
    normalises them there); "float32": the normalised crops, as the CPU engines (ONNX Runtime,
    OpenVINO, Keras) take them, normalised on the host (app.crop.normalize). Revisions before issue
    17 normalise on the host whatever the runner says."""

    input_size = (256, 192)
    name = engine = "instant stand-in"
    device, precision = "cpu", "float32"

    def __init__(self, bank: int = 64, seed: int = 0, input_dtype: str = "float32"):
        self.input_dtype = input_dtype
        rng = np.random.default_rng(seed)
        ys, xs = np.mgrid[0:64, 0:48].astype(np.float64)
        centres = STANDING_POSE[None] + rng.normal(0, 0.7, (bank, 17, 2))  # (B, K, 2)
        heights = rng.uniform(0.6, 0.95, (bank, 17))
        d2 = (xs[None, :, :, None] - centres[:, None, None, :, 0]) ** 2 + \
             (ys[None, :, :, None] - centres[:, None, None, :, 1]) ** 2
        maps = np.exp(-d2 / 8.0) * heights[:, None, None, :] + rng.normal(0, 0.01, (bank, 64, 48, 17))
        self._bank = maps.astype(np.float32)
        self._next = 0

    def __call__(self, batch) -> np.ndarray:
        index = (self._next + np.arange(len(batch))) % len(self._bank)
        self._next += len(batch)
        return self._bank[index]


def build_pipeline(boxes_path: Path, runner_input: str = "float32"):
    """The pipeline as run_demo.py builds it, with the stand-ins."""
    from app.pipeline import PipelineConfig, PosePipeline
    from app.pose import PoseConfig, PoseEstimator

    runner = InstantPoseModel(input_dtype=runner_input)
    return PosePipeline(ReplayDetector(boxes_path), PoseEstimator(runner, PoseConfig()), PipelineConfig())


def run_stages(video: str, boxes_path: Path, frames: int, warmup: int, out_dir: Path, clock: str,
               runner_input: str = "float32") -> dict:
    """Each stage of each frame timed in turn; returns mean ms per frame per stage over frames after warmup.

    clock "cpu": every stage, the pipeline's own included, is timed in CPU time of this process
    (time.process_time stands in for time.perf_counter, which the pipeline times its stages with,
    for this run only): on a shared machine under load, wall times mostly measure the wait for a
    core. "wall": wall time."""
    import inspect

    from app.views import compose_view as _compose

    # The same script measures older revisions (--compare): their compose_view took the annotated frame first.
    old_view = next(iter(inspect.signature(_compose).parameters)) == "annotated"
    if clock == "cpu":
        wall = time.perf_counter
        time.perf_counter = time.process_time
        try:
            return run_stages(video, boxes_path, frames, warmup, out_dir, "wall", runner_input)
        finally:
            time.perf_counter = wall
    from app.offline import offline_stage
    from app.outputs import VideoOutput
    from app.sources import open_source
    from app.views import ViewState, annotate, compose_view

    pipeline = build_pipeline(boxes_path, runner_input)
    output_path = out_dir / "stages.mp4"
    totals = dict.fromkeys(STAGES + ("read", "host_cpu", "process"), 0.0)
    counted = people = 0
    with open_source(video) as source:
        offline = offline_stage("auto", source, output_path)
        state = ViewState(smoothing="offline Kalman" if offline is not None else "live Kalman")
        # Two passes, so that no stage is timed while another thread works: with the clock "cpu" a
        # stage's time is the whole process's CPU time, and the source's reader thread or the
        # output's writer thread (app.outputs: it encodes the previous frame meanwhile) would add
        # theirs to whatever stage runs beside them. Pass 1: read every frame, then
        # PosePipeline.process on each, alone in the process. Pass 2: offline, draw, HUD, write.
        frames_read, read_ms = [], []
        iterator = iter(source)
        for _ in range(frames):
            t0 = time.perf_counter()
            frame = next(iterator, None)
            read_ms.append((time.perf_counter() - t0) * 1000)
            if frame is None:
                break
            frames_read.append(frame)
        per_frame = []
        for index, frame in enumerate(frames_read):
            times = {"read": read_ms[index]}
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            result = pipeline.process(frame.image)
            times["process"] = (time.perf_counter() - t0) * 1000
            times["host_cpu"] = (time.process_time() - cpu0) * 1000
            for stage in ("detect", "crop", "model", "decode", "track", "smooth"):
                times[stage] = result.timings_ms.get(stage, 0.0)
            per_frame.append((times, result))
        video_out = VideoOutput(output_path, fps=source.fps or 25.0)
        for index, (frame, (times, result)) in enumerate(zip(frames_read, per_frame)):
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            pairs = offline.push(frame, result) if offline is not None else [(frame, result)]
            times["offline"] = (time.perf_counter() - t0) * 1000
            for stage in ("draw", "hud", "write"):
                times[stage] = 0.0
            for item, delayed in pairs:  # one pair a frame once the offline stage is full
                t0 = time.perf_counter()
                annotated = annotate(item.image, delayed, state, pipeline.kalman, 0.3)
                t1 = time.perf_counter()
                if old_view:  # compose_view before views were drawn at the window's size took the annotated frame
                    compose_view(annotated, item.image, delayed, state, pipeline.kalman, 25.0, 0.3, "cpu")
                else:
                    compose_view(item.image, delayed, state, pipeline.kalman, 25.0, 0.3, "cpu")
                t2 = time.perf_counter()
                video_out.write(annotated)
                t3 = time.perf_counter()
                times["draw"] += (t1 - t0) * 1000
                times["hud"] += (t2 - t1) * 1000
                times["write"] += (t3 - t2) * 1000
            times["host_cpu"] += (time.process_time() - cpu0) * 1000
            if index >= warmup:
                counted += 1
                people += len(result.people)
                for stage, ms in times.items():
                    totals[stage] += ms
        t0 = time.perf_counter()
        video_out.close()  # the writer thread's last frames: part of the write stage's cost
        if counted:
            totals["write"] += (time.perf_counter() - t0) * 1000
    row = {stage: totals[stage] / max(counted, 1) for stage in totals}
    row["host"] = sum(row[stage] for stage in STAGES)
    row["people"] = people / max(counted, 1)
    row["frames"] = counted
    return row


def run_demo_loop(video: str, boxes_path: Path, frames: int, out_dir: Path, runner_input: str = "float32") -> float:
    """Wall ms per frame of app.demo.run (headless, writing a video: offline smoothing) with the stand-ins."""
    from app.demo import DemoOptions, run
    from app.sources import open_source

    pipeline = build_pipeline(boxes_path, runner_input)
    options = DemoOptions(source=video, output=str(out_dir / "demo.mp4"), overwrite=True, headless=True,
                          max_frames=frames, progress=False)
    source = open_source(video)
    start = time.perf_counter()
    count = run(options, pipeline, source, show=False)
    return (time.perf_counter() - start) * 1000 / max(count, 1)


def worker(args) -> None:
    """One measurement in this process (this tree's app); prints one JSON line."""
    video = str(Path(args.assets) / SCENES[args.scene][0])
    with tempfile.TemporaryDirectory() as tmp:
        row = run_stages(video, Path(args.boxes), args.frames, args.warmup, Path(tmp), args.clock, args.runner_input)
        row["demo"] = run_demo_loop(video, Path(args.boxes), args.frames, Path(tmp), args.runner_input)
    print("RESULT " + json.dumps(row))


def revision_tree(rev: str) -> Path:
    """The files of `rev` under out/host_bench/rev-<commit>/ with this script copied in; made once.
    (`git archive`, not `git worktree add`: nothing is registered in the repository.)"""
    commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    tree = CACHE / f"rev-{commit}"
    if not tree.exists():
        partial = CACHE / f"rev-{commit}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(partial)], input=archive, check=True)
        partial.rename(tree)
    shutil.copy2(Path(__file__), tree / "benchmarks" / "host_bench.py")
    shutil.copy2(ROOT / "benchmarks" / "machine.py", tree / "benchmarks" / "machine.py")
    return tree


def measure(tree: Path, scene: str, boxes: Path, args, runner_input: str) -> dict:
    command = [sys.executable, "-m", "benchmarks.host_bench", "--worker", "--scene", scene, "--boxes", str(boxes),
               "--frames", str(args.frames), "--warmup", str(args.warmup), "--assets", str(args.assets),
               "--clock", args.clock, "--runner-input", runner_input]
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"the run in {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", help="git revisions to measure side by side, comma-separated (e.g. 664ceef)")
    parser.add_argument("--scenes", default=",".join(SCENES), help=f"comma-separated, of {', '.join(SCENES)}")
    parser.add_argument("--frames", type=int, default=200, help="frames per run (street.avi has 205)")
    parser.add_argument("--warmup", type=int, default=20, help="first frames left out of the means")
    parser.add_argument("--repeats", type=int, default=3, help="runs per tree and scene, alternated")
    parser.add_argument("--assets", default=str(ASSETS), help="the shared assets folder (videos, detector)")
    parser.add_argument("--detector", default=str(ASSETS / "detector" / "yolov8n_int8.tflite"))
    parser.add_argument("--json", help="write every run's numbers here")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="time the stages in CPU time of the process (default: steadier on a shared "
                             "machine) or wall time; `demo` is always wall time")
    parser.add_argument("--runner-input", default="uint8,float32",
                        help="the stand-in runner's input, comma-separated, each measured on this tree: uint8 "
                             "(as TorchRunner on a CUDA device: crops normalised on the device), float32 (as the "
                             "CPU engines: normalised on the host); revisions are measured once (they normalise "
                             "on the host whatever the runner takes)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scene", help=argparse.SUPPRESS)
    parser.add_argument("--boxes", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    scenes = args.scenes.split(",")
    boxes = {scene: record_boxes(scene, args.frames, args.detector, Path(args.assets)) for scene in scenes}
    revisions = args.compare.split(",") if args.compare else []
    inputs = args.runner_input.split(",")
    # name -> (tree, runner input)
    trees = {rev: (revision_tree(rev), "float32") for rev in revisions}
    for runner_input in inputs:
        trees["this tree" if len(inputs) == 1 else f"this {runner_input}"] = (ROOT, runner_input)
    runs: dict[tuple[str, str], list[dict]] = {}
    for repeat in range(args.repeats):
        order = list(trees) if repeat % 2 == 0 else list(trees)[::-1]  # alternate who goes first
        for scene in scenes:
            for name in order:
                tree, runner_input = trees[name]
                row = measure(tree, scene, boxes[scene], args, runner_input)
                runs.setdefault((scene, name), []).append(row)
                print(f"  {scene} {name} run {repeat + 1}: process {row['process']:.2f} ms, host {row['host']:.2f} ms, "
                      f"demo {row['demo']:.2f} ms, load {os.getloadavg()[0]:.1f}",
                      file=sys.stderr)

    load = os.getloadavg()
    print(f"\nmachine: {cpu_model()}, {os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; "
          f"{args.frames} frames ({args.warmup} warm-up), median of {args.repeats} alternated runs; "
          f"stages in {args.clock} time, demo in wall time")
    columns = list(STAGES) + ["process", "host", "demo", "read", "people"]
    print("scene     tree          " + " ".join(f"{c:>7}" for c in columns))
    for scene in scenes:
        medians = {}
        for name in trees:
            rows = runs[(scene, name)]
            medians[name] = {c: statistics.median(r[c] for r in rows) for c in columns}
            print(f"{scene:9} {name[:13]:13} " + " ".join(f"{medians[name][c]:7.2f}" for c in columns))
        for rev in revisions:  # this tree / rev: under 1 is faster
            base = medians[rev]
            for name in trees:
                if name in revisions:
                    continue
                new = medians[name]
                label = f"{name.removeprefix('this ')}/{rev}" if len(inputs) > 1 else f"/{rev}"
                print(f"{scene:9} {label[:13]:13} " + " ".join(
                    f"{new[c] / base[c]:7.2f}" if base[c] > 0.005 else f"{'-':>7}" for c in columns))
    if args.json:
        Path(args.json).write_text(json.dumps({"load": load, "cpu": cpu_model(), "args": vars(args),
                                               "runs": {f"{s}|{n}": r for (s, n), r in runs.items()}}, indent=1))


if __name__ == "__main__":
    main()
