"""Long sequences of the synthetic world and the long-run benchmark's window metrics."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

import benchmarks.long_run as long_run
from fada_rt.clips import SAMPLES_PER_FRAME
from fada_rt.metrics.mouth import MouthEstimator
from fada_rt.metrics.windows import (
    drift_figure,
    mean_frame,
    sequence_windows,
    silence_scores,
    slope_per_minute,
    window_bounds,
)
from train.synthetic.sequence import make_sequence, silent_frames


@pytest.fixture(scope="module")
def sequence():
    return make_sequence(seed=2, index=0, seconds=24.0)


def test_sequence_is_seeded_and_speaks_in_turns(sequence) -> None:
    again = make_sequence(seed=2, index=0, seconds=24.0)
    assert np.array_equal(sequence.frames, again.frames) and np.array_equal(sequence.audio, again.audio)
    assert sequence.frames.shape == (600, 64, 64, 3) and sequence.audio.shape == (600 * SAMPLES_PER_FRAME,)
    turns = sequence.labels["turns"]
    assert len(turns) >= 2 and all(0 <= a < b <= 24.0 for a, b in turns)
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(turns)]
    assert min(gaps) >= 0.8  # silent stretches between turns
    silent = np.asarray(sequence.labels["silent"])
    assert 0.1 < silent.mean() < 0.6
    frame_rms = np.sqrt((sequence.audio.reshape(600, -1) ** 2).mean(1))
    assert frame_rms[silent].max() < 1e-3 < np.median(frame_rms[~silent])  # silence is silent, turns are not
    assert max(np.asarray(sequence.labels["frames"]["open"])[silent]) < 1e-3  # and the mouth is shut there
    other = make_sequence(seed=2, index=1, seconds=24.0)
    assert sequence.labels["identity"] != other.labels["identity"]


def test_silent_frames_keep_a_margin_around_turns() -> None:
    silent = silent_frames([(1.0, 2.0)], 100, margin=3)  # frames 25..50 talk
    assert not silent[22:53].any() and silent[:22].all() and silent[53:].all()


def test_window_helpers_on_known_values() -> None:
    assert window_bounds(1500, 250) == [(a, a + 250) for a in range(0, 1500, 250)]
    assert window_bounds(520, 250) == [(0, 250), (250, 500)]  # a 20-frame tail is too short to score
    assert window_bounds(530, 250)[-1] == (500, 530)
    frames = np.full((10, 32, 32, 3), 100, np.uint8)
    assert drift_figure(mean_frame(frames), mean_frame(frames)) == 0.0
    assert drift_figure(mean_frame(frames + 5), mean_frame(frames)) == pytest.approx(5.0)
    shifted = frames.copy()
    shifted[:, 20:28, 8:24] += 50  # inside the mouth box only: not drift
    assert drift_figure(mean_frame(shifted), mean_frame(frames)) == 0.0
    minutes = [0, 250, 500, 750]  # window starts at 25 fps, 10 s windows: centres 5, 15, 25, 35 s
    values = [1.0 + 0.5 * (s + 125) / 25 / 60 for s in minutes]
    assert slope_per_minute(values, minutes, window=250, fps=25) == pytest.approx(0.5)
    assert np.isnan(slope_per_minute([1.0, np.nan], [0, 250], window=250, fps=25))


def test_ground_truth_scores_as_ground_truth(sequence) -> None:
    est = MouthEstimator.load()
    rows = sequence_windows(sequence.frames, sequence.audio, portrait=sequence.frames[0], estimator=est, window=250)
    assert [(r["start"], r["stop"]) for r in rows] == [(0, 250), (250, 500), (500, 600)]
    assert rows[0]["drift"] == 0.0 and all(r["drift"] < 3.0 for r in rows)  # head sway averages out
    assert all(r["identity_error"] < 0.12 and r["jitter"] < 1.0 for r in rows)  # this identity: 0.08, 0.5
    assert all(r["sync_distance"] < 0.3 for r in rows)
    quiet = silence_scores(sequence.frames, np.asarray(sequence.labels["silent"]), estimator=est)
    assert quiet["silent_frames"] == int(np.sum(sequence.labels["silent"]))
    assert quiet["silence_open"] < 0.1 and quiet["silence_jitter"] < 1.5
    noisy = sequence.frames.astype(np.int16) + np.random.default_rng(0).integers(-40, 41, sequence.frames.shape)
    noisy = np.clip(noisy, 0, 255).astype(np.uint8)
    worse = sequence_windows(noisy, sequence.audio, portrait=sequence.frames[0], estimator=est, window=250)
    assert all(w["jitter"] > 5 * r["jitter"] for w, r in zip(worse, rows))


def test_benchmark_rows_accumulate(tmp_path, monkeypatch) -> None:
    """One row per run (same name: replaced), the ground truth beside them, a table, a plot; a results file
    scored on other sequences is refused."""
    monkeypatch.setattr(long_run, "SETS", {"short": long_run.SequenceSet("short", 3.0, (0,))})
    args = ["--sets", "short", "--out", str(tmp_path), "--window-seconds", "1.2"]
    long_run.main([*args, "--name", "a"])
    long_run.main([*args, "--name", "b", "--motion-noise-step", "20", "--noise-sharing", "0.5", "--motion-anchor",
                   "0.25", "--reference-sink", "on"])
    long_run.main([*args, "--name", "a"])
    results = json.loads((tmp_path / "long_run.json").read_text())
    assert [r["name"] for r in results["rows"]] == ["b", "a"]
    assert results["rows"][0]["rollout"] == {"motion_noise_step": 20, "noise_sharing": 0.5, "reference_sink": True,
                                             "motion_anchor": 0.25}
    short = results["rows"][1]["sets"]["short"]
    assert len(short["windows"]) == 2 and short["windows"][0]["drift"] == 0.0
    assert results["ground_truth"]["short"]["windows"][0]["fid"] == 0.0
    assert "| a | 6 |" in (tmp_path / "long_run.md").read_text()
    assert (tmp_path / "long_run.png").stat().st_size > 10_000
    monkeypatch.setattr(long_run, "SETS", {"short": long_run.SequenceSet("short", 3.0, (1,))})
    with pytest.raises(ValueError, match="other sequences"):
        long_run.main([*args, "--name", "c"])


def test_snapshots_are_upscaled_pngs(tmp_path) -> None:
    from PIL import Image

    frames = np.random.default_rng(0).integers(0, 256, (2000, 16, 16, 3), dtype=np.uint8)
    paths = long_run.save_snapshots(frames, tmp_path, "seq", fps=25)
    assert [p.name for p in paths] == ["seq_0000s.png", "seq_0060s.png", "seq_0079s.png"]
    img = np.asarray(Image.open(paths[1]))
    assert img.shape == (64, 64, 3) and np.array_equal(img[::4, ::4], frames[1500])
