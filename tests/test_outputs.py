"""Outputs: paths checked before the run, videos that play back with every frame, JSON that always parses."""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.errors import OutputError
from app.outputs import JsonOutput, VideoOutput, check_output_path, json_ready, person_record
from app.skeleton import KEYPOINT_NAMES

ROOT = Path(__file__).resolve().parents[1]


# --- check_output_path ------------------------------------------------------------------------

def test_missing_folder(tmp_path):
    with pytest.raises(OutputError, match=r"folder .*missing does not exist"):
        check_output_path(tmp_path / "missing" / "out.mp4", overwrite=True)


def test_existing_file_needs_overwrite(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("{}")
    with pytest.raises(OutputError, match="--overwrite"):
        check_output_path(path, overwrite=False)
    assert check_output_path(str(path), overwrite=True) == path


def test_a_folder_is_not_an_output_file(tmp_path):
    with pytest.raises(OutputError, match="is a folder"):
        check_output_path(tmp_path, overwrite=True)


def test_fresh_path_passes_and_leaves_nothing_behind(tmp_path):
    assert check_output_path(tmp_path / "out.mp4") == tmp_path / "out.mp4"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc, a folder nobody can write")
def test_place_that_cannot_be_written_proc():
    with pytest.raises(OutputError, match="cannot write in folder /proc"):
        check_output_path("/proc/out.mp4")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes through permission bits")
def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="cannot write in folder"):
            check_output_path(folder / "out.json")
    finally:
        folder.chmod(0o755)


# --- VideoOutput ------------------------------------------------------------------------------

def gray(level, size=(64, 48)):
    return np.full((size[1], size[0], 3), level, np.uint8)


def read_back(path):
    """(frames decoded, header frame count, fps, first frame shape) of a written video."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"{path} does not open"
    header_count, fps = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames, header_count, fps


@pytest.mark.parametrize("name", ["out.mp4", "out.avi"])
def test_video_reads_back_every_frame_at_the_same_fps(tmp_path, name):
    levels = [20 * i for i in range(12)]
    with VideoOutput(tmp_path / name, fps=12.5) as video:
        for level in levels:
            video.write(gray(level))
    frames, header_count, fps = read_back(tmp_path / name)
    assert len(frames) == header_count == 12 and fps == pytest.approx(12.5)
    assert frames[0].shape == (48, 64, 3)
    # lossy codecs: a flat grey comes back within a few levels
    assert np.allclose([f.mean() for f in frames], levels, atol=4)


def test_interrupted_run_still_plays(tmp_path):
    path = tmp_path / "interrupted.mp4"
    video = VideoOutput(path, fps=25)
    with pytest.raises(KeyboardInterrupt):
        try:
            for i in range(100):
                if i == 7:
                    raise KeyboardInterrupt  # Ctrl-C in the middle of the run
                video.write(gray(100))
        finally:
            video.close()
    frames, header_count, fps = read_back(path)
    assert len(frames) == header_count == 7 and fps == 25


def test_size_comes_from_the_first_frame_and_others_are_fitted_not_stretched(tmp_path, caplog):
    path = tmp_path / "sizes.avi"
    with caplog.at_level(logging.WARNING, logger="app.outputs"), VideoOutput(path, fps=10) as video:
        video.write(gray(50, (64, 48)))
        video.write(gray(150, (128, 96)))
        video.write(gray(250, (24, 48)))  # a portrait image among landscapes
    frames, _, _ = read_back(path)
    assert [f.shape for f in frames] == [(48, 64, 3)] * 3
    assert np.allclose([f.mean() for f in frames[:2]], [50, 150], atol=4)
    # Letterboxed: the 24 x 48 picture keeps its shape in the middle 24 columns, black either side.
    portrait = frames[2].mean(axis=(0, 2))
    assert portrait[22:42].min() > 240 and portrait[:18].max() < 12 and portrait[-18:].max() < 12
    assert len([r for r in caplog.records if r.name == "app.outputs"]) == 1  # logged once, not per frame


def test_odd_size_is_padded_not_cropped(tmp_path):
    path = tmp_path / "odd.mp4"
    frame = np.zeros((47, 63, 3), np.uint8)
    frame[:, -1] = 255  # the last column must survive the encoder
    with VideoOutput(path, fps=10) as video:
        video.write(frame)
    frames, _, _ = read_back(path)
    assert frames[0].shape == (48, 64, 3)
    assert frames[0][:47, 62].mean() > 200 and frames[0][:47, 63].mean() < 60


def test_video_close_is_idempotent_and_write_after_close_fails(tmp_path, caplog):
    video = VideoOutput(tmp_path / "none.mp4", fps=30)
    with caplog.at_level(logging.WARNING, logger="app.outputs"):
        video.close()
        video.close()
    assert not (tmp_path / "none.mp4").exists()
    assert any("no frame" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError):
        video.write(gray(0))


def test_unknown_video_extension(tmp_path):
    with pytest.raises(OutputError, match=r"\.mp4, \.avi"):
        VideoOutput(tmp_path / "out.gif", fps=30)


# --- JsonOutput -------------------------------------------------------------------------------

def people(n, k=17, track=True):
    """n person dicts built with person_record from arrays like the pipeline's."""
    keypoints = np.zeros((n, k, 2), np.float32)
    keypoints[:, :, 0] = np.arange(k) + 100 * np.arange(n)[:, None] + 0.123456
    keypoints[:, :, 1] = np.arange(k) * 2.0
    scores = np.full((n, k), 0.876543, np.float32)
    return [person_record(np.array([10 + i, 20, 110 + i, 220], np.float32), np.float32(0.9), keypoints[i],
                          scores[i], track_id=np.int64(i) if track else None) for i in range(n)]


def test_json_parses_after_every_frame_without_close(tmp_path):
    path = tmp_path / "out.json"
    output = JsonOutput(path, source="clip.mp4", fps=25.0, width=518, height=496)
    assert json.loads(path.read_text())["frames"] == []
    for i in range(5):
        output.write_frame(i, i / 25, people(i % 3))
        document = json.loads(path.read_text())  # never closed yet
        assert [f["frame"] for f in document["frames"]] == list(range(i + 1))
        assert [p["track_id"] for p in document["frames"][-1]["people"]] == list(range(i % 3))
    assert document["source"] == "clip.mp4" and document["width"] == 518 and document["fps"] == 25.0
    assert document["keypoint_names"] == list(KEYPOINT_NAMES)
    output.close()
    output.close()
    assert json.loads(path.read_text()) == document


def test_outputs_write_where_there_is_no_flock_nor_statvfs(tmp_path, monkeypatch):
    """Windows has neither fcntl nor os.statvfs nor os.pathconf: the outputs are written there without a lock, the
    free space comes from shutil.disk_usage, and the JSON's descriptor is opened in binary mode
    (O_BINARY), since JsonOutput writes at byte offsets that "\n" -> "\r\n" would shift."""
    import shutil

    from app import outputs

    monkeypatch.setitem(sys.modules, "fcntl", None)  # `import fcntl` raises ImportError
    monkeypatch.delattr(os, "statvfs")
    monkeypatch.delattr(os, "pathconf")
    check_output_path(tmp_path / "out.json")
    with pytest.raises(OutputError, match=r"is 300 bytes long; this file system allows 255"):
        check_output_path(tmp_path / ("x" * 295 + ".json"))
    monkeypatch.setattr(os, "O_BINARY", 0x40000000, raising=False)  # no flag Linux knows of at that bit
    opened, real_open = [], os.open
    monkeypatch.setattr(os, "open", lambda path, flags, *rest: opened.append((Path(path).name, flags))
                        or real_open(path, flags & ~0x40000000, *rest))
    free = [10 ** 9]
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2 * 10 ** 9, 0, free[0]))

    path = tmp_path / "out.json"
    with JsonOutput(path, source="clip.mp4", fps=25.0) as output:
        for i in range(3):
            output.write_frame(i, i / 25, people(2))
        assert not outputs.in_use(path)
        free[0] = 1000  # below the reserve: the next frame stops with "disk full", the file stays whole
        with pytest.raises(OutputError, match="^disk full: "):
            output.write_frame(3, 3 / 25, people(2))
    assert [f["frame"] for f in json.loads(path.read_text())["frames"]] == [0, 1, 2]
    assert opened[0] == ("out.json", os.O_WRONLY | os.O_CREAT | 0x40000000)

    free[0] = 10 ** 9
    with VideoOutput(tmp_path / "out.mp4", fps=10) as video:
        for level in (0, 40, 80):
            video.write(gray(level))
    frames, _, _ = read_back(tmp_path / "out.mp4")
    assert len(frames) == 3 and ("out.mp4", os.O_WRONLY | os.O_CREAT | 0x40000000) in opened

    # The weights converter's own check (python -m app.weights convert / download).
    from app.weights.conversion import _check_space

    free[0] = 3 << 20
    _check_space(tmp_path / "w.weights.h5", 10 ** 6)  # 1 MB of weights fit in 3 MiB
    with pytest.raises(OutputError, match="^disk full: .* needs about 5 MiB and .* has 3 MiB free"):
        _check_space(tmp_path / "w.weights.h5", 4 * 10 ** 6)


def test_json_person_layout_rounding_and_nan(tmp_path):
    person = people(1, track=False)[0]
    person["keypoints"][9:11] = [float("nan"), np.float32("nan")]  # joint 3 lost
    person["visible"] = np.array([True] * 16 + [False])  # extra keys pass through
    with JsonOutput(tmp_path / "out.json") as output:
        output.write_frame(7, 0.28000001, [person])
    document = json.loads((tmp_path / "out.json").read_text())
    assert document["fps"] is None and document["width"] is None  # not given: null, not a made-up 0
    frame = document["frames"][0]
    person = frame["people"][0]
    assert frame["time_s"] == 0.28 and person["track_id"] is None
    assert person["bbox"] == [10.0, 20.0, 110.0, 220.0] and person["score"] == 0.9
    assert len(person["keypoints"]) == 3 * 17
    assert person["keypoints"][:6] == [0.12, 0.0, 0.88, 1.12, 2.0, 0.88]  # x, y, s per joint
    assert person["keypoints"][9:12] == [None, None, 0.88]  # NaN -> null keeps the file strict JSON
    assert person["visible"][-2:] == [True, False]


def test_person_record_matches_coco_order():
    keypoints = np.arange(34, dtype=np.float32).reshape(17, 2)
    record = person_record(np.zeros(4), 1.0, keypoints, np.ones(17), track_id=np.int64(4))
    assert record["keypoints"][3 * 16: 3 * 17] == [32.0, 33.0, 1.0] and record["track_id"] == 4
    json.dumps(record, allow_nan=False)  # plain Python types only


def test_json_ready_converts_numpy_and_non_finite():
    value = {"a": np.float64(1.23456), "b": [np.int32(3), np.bool_(True), np.inf], "c": "text", "d": None}
    assert json_ready(value) == {"a": 1.23, "b": [3, True, None], "c": "text", "d": None}


def test_json_survives_kill_9(tmp_path):
    path = tmp_path / "killed.json"
    script = textwrap.dedent(f"""
        import sys, time
        import numpy as np
        from app.outputs import JsonOutput, person_record
        output = JsonOutput({str(path)!r}, source="camera 0", fps=30)
        person = person_record(np.zeros(4), 1.0, np.zeros((17, 2)), np.ones(17))
        for i in range(5):
            output.write_frame(i, i / 30, [person])
        print("ready", flush=True)
        time.sleep(60)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    document = json.loads(path.read_text())
    assert [f["frame"] for f in document["frames"]] == [0, 1, 2, 3, 4]


def test_json_unwritable_path(tmp_path):
    with pytest.raises(OutputError, match="cannot write"):
        JsonOutput(tmp_path / "missing" / "out.json")


# --- annotated still images (app.stills) ---------------------------------------------------------

class _OnePerson:
    """Stands in for PosePipeline: one person, box and joints, in every image; records resets."""

    kalman = True

    def __init__(self):
        self.resets = []

    def reset(self, restart_ids=False):
        self.resets.append(restart_ids)

    def process(self, image, want_heatmaps=False):
        from app.pipeline import FrameResult, Person

        keypoints = np.tile([[32.0, 30.0]], (len(KEYPOINT_NAMES), 1)).astype(np.float32)
        person = Person(track_id=1, box=np.array([10, 5, 50, 60], np.float32), box_score=0.9,
                        raw_keypoints=keypoints, smoothed_keypoints=keypoints,
                        scores=np.full(len(KEYPOINT_NAMES), 0.9, np.float32),
                        visible=np.ones(len(KEYPOINT_NAMES), bool), kalman=True)
        return FrameResult(people=[person], detected=True, timings_ms={})


def _photos(folder: Path, names=("a.jpg", "b.png")) -> Path:
    folder.mkdir()
    for i, name in enumerate(names):
        cv2.imwrite(str(folder / name), np.full((72 + 8 * i, 96, 3), 90, np.uint8))
    return folder


def _run_on(source_path: Path, output: Path, overwrite: bool = False):
    from app.demo import DemoOptions, run
    from app.sources import open_source

    pipeline = _OnePerson()
    options = DemoOptions(source=str(source_path), output=str(output), progress=False, overwrite=overwrite)
    count = run(options, pipeline, open_source(source_path), show=False)
    return count, pipeline


def test_a_folder_of_images_writes_a_folder_of_annotated_images(tmp_path):
    photos = _photos(tmp_path / "photos")
    count, pipeline = _run_on(photos, tmp_path / "annotated")
    assert count == 2
    assert sorted(p.name for p in (tmp_path / "annotated").iterdir()) == ["a.jpg", "b.png"]
    for name, height in (("a.jpg", 72), ("b.png", 80)):
        image = cv2.imread(str(tmp_path / "annotated" / name))
        assert image.shape == (height, 96, 3)  # each at its own size
        assert np.abs(image.astype(int) - 90).max(axis=-1).__gt__(60).sum() > 50  # box and joints drawn
    assert (cv2.imread(str(tmp_path / "annotated" / "b.png"))[60:, 60:] == 90).all()  # png: lossless, untouched
    assert pipeline.resets == [True, True]  # unrelated images: each numbers its people from #1
    assert not [p for p in (tmp_path / "annotated").iterdir() if p.name.startswith(".")]  # no temporary left


def test_one_image_writes_one_annotated_image(tmp_path):
    photos = _photos(tmp_path / "photos", names=("only.png",))
    count, _ = _run_on(photos / "only.png", tmp_path / "out.jpg")
    assert count == 1 and cv2.imread(str(tmp_path / "out.jpg")).shape == (72, 96, 3)
    # Again: refused without --overwrite, replaced with it.
    with pytest.raises(OutputError, match="--overwrite"):
        _run_on(photos / "only.png", tmp_path / "out.jpg")
    assert _run_on(photos / "only.png", tmp_path / "out.jpg", overwrite=True)[0] == 1


def test_written_images_take_the_users_umask_not_a_private_mode(tmp_path):
    # Written through a temporary file and a rename: tempfile.mkstemp's files are 0600 and stayed so,
    # so an annotated image could not be served or shared by anyone but its writer.
    photos = _photos(tmp_path / "photos")
    previous = os.umask(0o022)
    try:
        _run_on(photos, tmp_path / "annotated")
        _run_on(photos / "a.jpg", tmp_path / "one.jpg")
    finally:
        os.umask(previous)
    written = [*(tmp_path / "annotated").iterdir(), tmp_path / "one.jpg"]
    modes = {path.name: path.stat().st_mode & 0o777 for path in written}
    assert modes == {"a.jpg": 0o644, "b.png": 0o644, "one.jpg": 0o644}


def test_image_outputs_that_cannot_be_right_are_refused_before_any_work(tmp_path, dancer_video):
    from app.sources import open_source
    from app.stills import image_output_path, wants_images

    photos = _photos(tmp_path / "photos")
    assert wants_images("out.jpg") and wants_images("out/") and wants_images("out") and wants_images(photos)
    assert not wants_images("out.mp4") and not wants_images(None)
    with pytest.raises(OutputError, match="give --output a folder"):
        image_output_path(tmp_path / "out.jpg", open_source(photos))
    with pytest.raises(OutputError, match=r"video file name \(\.mp4, \.avi\)"):
        image_output_path(tmp_path / "out.jpg", open_source(dancer_video))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "b.png").write_bytes(b"mine")
    with pytest.raises(OutputError, match="b.png already exists"):
        image_output_path(tmp_path / "taken", open_source(photos))
    assert image_output_path(tmp_path / "taken", open_source(photos), overwrite=True).folder
    with pytest.raises(OutputError, match="does not exist"):
        image_output_path(tmp_path / "missing" / "deeper", open_source(photos))
    # A video of the images stays possible.
    count, _ = _run_on(photos, tmp_path / "slides.avi")
    assert count == 2 and (tmp_path / "slides.avi").stat().st_size > 0
