"""A short form of the soak test (benchmarks/soak.py runs 20,000 frames): people enter and leave,
and the process must hold a bounded track table and stop growing in memory after warm-up."""

from benchmarks.soak import soak


def test_soak_memory_and_tables_stay_bounded(tmp_path):
    report = soak(frames=1500, warmup=500, max_people=4, out_dir=tmp_path)
    # One track and one smoother per person on screen, plus those who left within the tracker's
    # max_missed (60) frames: a walker needs over 120 frames to cross, so at most one per lane.
    assert report["max_tracks"] <= 2 * report["max_people"]
    assert report["max_smoothers"] <= 2 * report["max_people"]
    # A leak of even 1 KB per frame would show as 1 MB per 1000 frames.
    assert report["rss_slope_mb_per_1000_frames"] < 1.0, report["rss_samples"]
    assert report["detector_calls_per_frame"] < 1.0
