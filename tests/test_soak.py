"""A shorter form of the soak test (benchmarks/soak.py runs 20,000 frames): people enter and leave,
and the process must hold a bounded track table and stop growing in memory after warm-up."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# In its own process: the test process holds TensorFlow, torch and every earlier test's heap, whose
# allocator steps would be read as this run's growth.
SOAK = (
    "import json, sys, app; from benchmarks.soak import soak; "
    "print(json.dumps(soak(frames=4000, warmup=1000, max_people=4, out_dir=sys.argv[1])))"
)


def test_soak_memory_and_tables_stay_bounded(tmp_path):
    completed = subprocess.run([sys.executable, "-c", SOAK, str(tmp_path)], cwd=ROOT, capture_output=True,
                               text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    # One track and one smoother per person on screen, plus those who left within the tracker's
    # max_missed (60) frames: a walker needs over 120 frames to cross, so at most one per lane.
    assert report["max_tracks"] <= 2 * report["max_people"]
    assert report["max_smoothers"] <= 2 * report["max_people"]
    # A leak of even 1 KB per frame would show as 1 MB per 1000 frames.
    assert report["rss_slope_mb_per_1000_frames"] < 1.0, report["rss_samples"]
    assert report["detector_calls_per_frame"] < 1.0
