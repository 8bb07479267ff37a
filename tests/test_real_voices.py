"""fada_rt.metrics.closure (hand-made openness, known answers) and benchmarks.real_voices end to end on a tiny,
untrained model and a 2-clip held-out flite world."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from conftest import make_tiny_model, randomize_zero_init

from benchmarks.real_voices import audio_change, condition_refs, main, model_labels, process_audio
from fada_rt.metrics.closure import closure_events, cut_segments, mouth_closure, summarize_closure

FPS = 10  # frame i at i / 10 s: easy arithmetic


def _openness() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """3 s: speech 0-1 s, silence 1-2 s (closes at 1.2 s, opens again at 1.9 s), speech 2-2.5 s, then an
    open mouth to the end (never closes)."""
    o = np.full(30, 0.8)
    o[10], o[11] = 0.5, 0.3
    o[12:19] = 0.05
    o[19] = 0.4  # 0.1 s before the next segment: still silence proper
    o[20:25] = 0.7
    o[25:30] = 0.6
    return o, [(0.0, 1.0), (2.0, 2.5)]


def test_closure_known_answers() -> None:
    o, segs = _openness()
    r = mouth_closure(o, segs, fps=FPS)
    assert r["ends"] == 2 and r["never_closed"] == 1
    assert r["closure_delay_mean"] == pytest.approx((0.2 + 0.5) / 2)  # 1.0 -> 1.2 s; 2.5 s -> never (0.5 s left)
    assert r["closure_delay_p90"] == pytest.approx(0.2 + 0.9 * 0.3)
    assert r["closed_within_0.2s"] == pytest.approx(0.5)
    # silence proper: frames 12..19 (1.2-1.9 s) and 27..29 (>= 2.7 s, to the clip end)
    assert r["silence_frames"] == 11
    assert r["silence_open_mean"] == pytest.approx((7 * 0.05 + 0.4 + 3 * 0.6) / 11)
    assert r["silence_open_p95"] == pytest.approx(0.6)


def test_closure_gaps_leading_silence_and_thresholds() -> None:
    o = np.array([0.0] * 9 + [0.9] * 11 + [0.2, 0.1, 0.0, 0.0, 0.0])  # 25 frames, 2.5 s
    segs = [(1.0, 1.4), (1.6, 2.0)]  # a 0.2 s gap is no end; 2.0 s -> clip end (0.5 s) is
    r = mouth_closure(o, segs, fps=FPS)
    assert r["ends"] == 1 and r["never_closed"] == 0
    assert r["closure_delay_mean"] == pytest.approx(0.1)  # frame 21 (0.1) is <= the threshold 0.1
    assert r["closed_within_0.2s"] == 1.0
    assert r["silence_frames"] == 10 + 3  # 0-0.9 s before the first segment; 2.2-2.4 s after the last
    assert mouth_closure(o, segs, fps=FPS, threshold=0.05)["closure_delay_mean"] == pytest.approx(0.2)
    assert mouth_closure(o, segs, fps=FPS, min_gap=0.6)["ends"] == 0
    assert math.isnan(mouth_closure(o, segs, fps=FPS, min_gap=0.6)["closure_delay_mean"])
    closed_early = mouth_closure(np.zeros(25), [(0.0, 1.05)], fps=FPS)  # closed at the first frame after the end
    assert closed_early["closure_delay_mean"] == pytest.approx(0.05)


def test_closure_silent_clip_pooling_and_cutting() -> None:
    silent = mouth_closure(np.full(8, 0.02), [], fps=FPS)
    assert silent["ends"] == 0 and silent["silence_frames"] == 8 and math.isnan(silent["closure_delay_p90"])
    assert silent["silence_open_mean"] == pytest.approx(0.02)
    o, segs = _openness()
    a = closure_events(o, segs, fps=FPS)
    pooled = summarize_closure([a, closure_events(np.full(8, 0.02), [], fps=FPS)])
    assert pooled["ends"] == 2 and pooled["silence_frames"] == 19
    assert math.isnan(summarize_closure([])["silence_open_mean"])
    assert cut_segments([(0.0, 1.0), (1.5, 3.0), (4.0, 5.0)], 2.0) == [(0.0, 1.0), (1.5, 2.0)]


@pytest.mark.parametrize("openness, segs, kw, match", [
    (np.zeros((4, 2)), [], {}, "non-empty"),
    (np.array([0.0, np.nan]), [], {}, "finite"),
    (np.zeros(30), [(1.0, 0.5)], {}, "start < stop"),
    (np.zeros(30), [(1.0, 2.0), (0.5, 0.8)], {}, "sorted"),
    (np.zeros(30), [(0.0, 1.0, 2.0)], {}, "pair"),
    (np.zeros(30), [(1.0, 3.5)], {}, "cut_segments"),
    (np.zeros(30), [], {"fps": 0}, "fps"),
    (np.zeros(30), [], {"min_gap": -1.0}, "min_gap"),
])
def test_closure_rejects_bad_input(openness, segs, kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        mouth_closure(openness, segs, **{"fps": FPS, **kw})


def test_model_labels_tell_checkpoints_apart() -> None:
    assert model_labels(["/r/a/fast/student", "/r/b/fast/student"]) == ["a/fast/student", "b/fast/student"]
    assert model_labels(["/r/x", "/r/y"]) == ["x", "y"]
    assert model_labels(["/r/x/student"]) == ["x/student"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (apt-get install flite): the held-out real-voice world needs it")
    from fada_rt.checkpoint import save_model
    from train.synthetic.dataset import generate_dataset

    root = tmp_path_factory.mktemp("real_voices")
    generate_dataset(out=root / "heldout", clips=2, size=64, tier="A", seed=11, min_seconds=2.0, max_seconds=2.4,
                     progress=False, speech="flite")
    teacher = make_tiny_model(seed=1)
    randomize_zero_init(teacher)
    save_model(teacher.make_student("layer_tokens"), root / "untrained" / "student", role="student")
    return root


def test_telephone_removes_the_high_band(world) -> None:
    from benchmarks.quality_table import load_refs

    refs = load_refs(world / "heldout", clips=2, manifest="A", max_frames=40)
    phone = condition_refs(refs, "telephone")
    for r, p in zip(refs, phone):
        assert p.audio.shape == r.audio.shape and p.audio.dtype == np.float32
        spec_r, spec_p = (np.abs(np.fft.rfft(x.astype(np.float64))) ** 2 for x in (r.audio, p.audio))
        freq = np.fft.rfftfreq(r.audio.size, 1 / 16000)
        high, low = freq >= 4000, freq < 300
        # flite's kal voice is 8 kHz speech (next to nothing above 4 kHz to begin with): the band is attenuated,
        # and what is left of it is > 50 dB below the line's speech
        assert spec_p[high].sum() < 0.3 * spec_r[high].sum() and spec_p[high].sum() < 1e-5 * spec_p.sum()
        assert spec_p[low].sum() < 0.03 * spec_r[low].sum()  # and the bass below 300 Hz is gone
    assert audio_change(refs, phone)["audio_hf_db"] < -20
    assert np.array_equal(process_audio(refs[0].audio, "clean"), refs[0].audio)
    with pytest.raises(ValueError, match="unknown condition"):
        process_audio(refs[0].audio, "carrier-pigeon")


def test_main_end_to_end(world, capsys: pytest.CaptureFixture[str]) -> None:
    out = world / "results"
    conditions = ["clean", "telephone", "mp3", "opus"]
    main(["--data", str(world / "heldout"), "--checkpoint", str(world / "untrained" / "student"), "--sampler",
          "fast", "--clips", "2", "--max-frames", "40", "--conditions", *conditions, "--out", str(out),
          "--name", "smoke", "--seed", "3"])
    result = json.loads((out / "real_voices-smoke.json").read_text())
    assert (out / "real_voices-smoke.md").is_file() and not (out / "real_voices.json").exists()
    rows = {(r["model"], r["condition"]): r for r in result["rows"]}
    assert set(rows) == {("Ground truth", "clean")} | {("untrained/student", c) for c in conditions}
    gt = rows["Ground truth", "clean"]
    clean, phone = rows["untrained/student", "clean"], rows["untrained/student", "telephone"]
    for key in ("sync_distance", "mouth_open_corr", "fid", "fvd", "jitter", "closure_delay_mean", "silence_open_mean",
                "ends", "never_closed"):
        assert key in gt and key in clean
    assert gt["mouth_open_corr"] > 0.5 and gt["mouth_open_corr"] > clean.get("mouth_open_corr", 0.0)
    assert gt["fid"] == 0.0 < clean["fid"]
    assert gt["gt_open_corr"] == pytest.approx(1.0) and gt["gt_open_mae"] == 0.0
    assert not clean["gt_open_corr"] > 0.5 and clean["gt_open_mae"] > 0.0
    assert clean["open_r_vs_gt"] == pytest.approx(clean["mouth_open_corr"] / gt["mouth_open_corr"])
    assert clean["sync_d_vs_gt"] == pytest.approx(clean["sync_distance"] / gt["sync_distance"])
    assert "vs_clean" not in clean and phone["vs_clean"]["fvd"] == pytest.approx(phone["fvd"] / clean["fvd"])
    # the telephone line reached the model: its audio lost the high band and the frames changed
    assert result["audio"]["telephone"]["audio_hf_db"] < -20 and result["audio"]["clean"]["audio_snr_db"] > 1e9
    assert phone["frames_diff_vs_clean"] > 0
    printed = capsys.readouterr().out
    assert "untrained/student / opus: generating 2 clips" in printed and "| Ground truth | clean |" in printed
