"""Metrics of the synthetic world discriminate good from bad generations (docs/design.md §6).

Margins (ratios / thresholds) are stated in each test; measured values at the time of
writing are in the comments.
"""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm

from benchmarks.evaluate import main as evaluate_main
from fada_rt.clips import write_clip
from fada_rt.metrics.features import FixedClipFeatures, FixedFrameFeatures
from fada_rt.metrics.fid import fid, frame_features
from fada_rt.metrics.frechet import fit_gaussian, frechet_distance, frechet_distance_of
from fada_rt.metrics.fvd import fvd, window_features
from fada_rt.metrics.identity import identity_error
from fada_rt.metrics.jitter import temporal_jitter
from fada_rt.metrics.mouth import WEIGHTS_DIR, MouthEstimator
from fada_rt.metrics.sync import sync_score
from train.synthetic.dataset import make_clip
from train.synthetic.degrade import blur

N_CLIPS = 10


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small convolutions run faster on one thread, and far faster on a shared, busy CPU."""
    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    yield
    torch.set_num_threads(before[0])
    cv2.setNumThreads(before[1])


def _clips(seed, kind=None, n=N_CLIPS, seconds=2.4):
    return [make_clip(seed=seed, index=i, tier="B", kind=kind or "clean", min_seconds=seconds, max_seconds=seconds) for i in range(n)]


@pytest.fixture(scope="module")
def gt():
    return _clips(777)


@pytest.fixture(scope="module")
def held_out():
    return _clips(778)


@pytest.fixture(scope="module")
def estimator():
    return MouthEstimator.load()


def _delay(audio, frames):
    """Audio delayed by ``frames`` (negative: advanced), same length."""
    d = abs(frames) * 640
    pad = np.zeros(d, np.float32)
    return np.concatenate([pad, audio[:-d]]) if frames > 0 else np.concatenate([audio[d:], pad])


def test_frechet_distance_matches_closed_forms():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6))
    assert abs(frechet_distance_of(x, x)) < 1e-9
    a = fit_gaussian(rng.normal(1.0, 2.0, (4000, 1)))
    b = fit_gaussian(rng.normal(-1.0, 0.5, (4000, 1)))
    expected = (a.mean[0] - b.mean[0]) ** 2 + (np.sqrt(a.cov[0, 0]) - np.sqrt(b.cov[0, 0])) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    m1, m2 = rng.normal(size=(2, 8, 8))
    s1, s2 = m1 @ m1.T, m2 @ m2.T + np.eye(8)
    g1 = type(a)(mean=np.zeros(8), cov=s1, count=2)
    g2 = type(a)(mean=np.ones(8), cov=s2, count=2)
    reference = 8.0 + np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real)
    assert frechet_distance(g1, g2) == pytest.approx(reference, rel=1e-6)


def test_offset_search_finds_known_shifts():
    rng = np.random.default_rng(1)
    signal = np.convolve(rng.normal(size=120), np.ones(4) / 4, mode="same")
    for shift in (7, -4, 0):
        audio = np.roll(signal, shift)  # audio[k + shift] = video[k]: the audio lags by ``shift``
        r = sync_score(signal, audio)
        assert r.offset == shift and r.distance < 1e-12 and r.confidence > 0.1
    with pytest.raises(ValueError, match="too short"):
        sync_score(signal[:20], signal[:20])


def test_estimator_reads_ground_truth(gt, estimator):
    """Face states from frames and the mouth the audio calls for, vs labels (held-out seed)."""
    err, corr, audio_corr = [], [], []
    for c in gt:
        truth = np.array(c.labels["frames"]["open"])
        seen = estimator.face_states(c.frames)["open"]
        heard = estimator.audio_mouth(c.audio, len(truth))["open"]
        err.append(np.abs(seen - truth).mean())
        corr.append(np.corrcoef(seen, truth)[0, 1])
        audio_corr.append(np.corrcoef(heard, truth)[0, 1])
    assert np.mean(err) < 0.08  # measured ~0.03
    assert (WEIGHTS_DIR / "mouth.safetensors").stat().st_size < 4_000_000  # shipped: ~1.5 MB
    assert np.mean(corr) > 0.9 and np.mean(audio_corr) > 0.9  # measured ~0.97 / ~0.98


def test_sync_offset_and_confidence(gt, estimator):
    def score(clip, audio=None):
        return sync_score(*estimator.embed(clip.frames, clip.audio if audio is None else audio))

    truth = [score(c) for c in gt]
    assert [r.offset for r in truth] == [0] * len(gt)
    conf = np.array([r.confidence for r in truth])
    assert conf.min() > 0.12  # measured 0.22-0.28
    for shift in (5, -5):
        shifted = [score(c, _delay(c.audio, shift)) for c in gt]
        assert all(abs(r.offset - shift) <= 1 for r in shifted), [r.offset for r in shifted]
    frozen = [score(c) for c in _clips(777, kind="frozen", n=6)]
    frozen_conf = np.array([r.confidence for r in frozen])
    assert frozen_conf.max() < conf.min()  # measured max 0.09 vs min 0.22
    assert frozen_conf.mean() < 0.35 * conf.mean()
    assert np.mean([r.distance for r in frozen]) > 1.5 * np.mean([r.distance for r in truth])


def test_mouth_follow_separates_openness_and_width(gt, estimator):
    """Ground truth: openness follows the audio closely, width less (the estimator reads width worse);
    a mouth frozen on its first frame follows nothing; the audio of another clip does not match."""
    from fada_rt.metrics.suite import mouth_follow

    truth = [mouth_follow(estimator, c) for c in gt]
    open_corr = np.array([r["mouth_open_corr"] for r in truth])
    width_corr = np.array([r["mouth_width_corr"] for r in truth if "mouth_width_corr" in r])
    assert open_corr.min() > 0.9 and width_corr.mean() > 0.6  # measured: min 0.96 / mean 0.88
    frozen = dataclasses.replace(gt[0], frames=np.repeat(gt[0].frames[:1], len(gt[0].frames), 0))
    assert mouth_follow(estimator, frozen) == {}  # nothing varies in the frames
    swapped = dataclasses.replace(gt[0], audio=gt[1].audio)  # both 2.4 s
    assert abs(mouth_follow(estimator, swapped)["mouth_open_corr"]) < 0.5  # measured -0.20


def test_sync_recovers_generator_desync_labels(estimator):
    found = 0
    for i in range(8):
        c = make_clip(seed=31, index=i, tier="B", kind="desynced", min_seconds=3, max_seconds=3)
        offset = c.labels["offset_frames"]
        if abs(offset) > 14:
            continue  # outside the ±15 search window
        r = sync_score(*estimator.embed(c.frames, c.audio))
        assert abs(r.offset - offset) <= 1, (offset, r.offset)
        found += 1
    assert found >= 2


def test_fid_and_fvd_analogues_discriminate(gt, held_out):
    rng = np.random.default_rng(0)
    g = [c.frames for c in gt]
    h = [c.frames for c in held_out]
    sets = {
        "noised": [np.clip(f + rng.normal(0, 8, f.shape), 0, 255).astype(np.uint8) for f in g],
        "blurred": [blur(f, sigma=1.0) for f in g],
        "shuffled": [f[rng.permutation(len(f))] for f in g],
    }
    frames, windows = FixedFrameFeatures(), FixedClipFeatures()
    ref_f, ref_w = frame_features(h, frames), window_features(h, windows)
    base = frechet_distance_of(frame_features(g, frames), ref_f)
    base_v = frechet_distance_of(window_features(g, windows), ref_w)
    assert base == pytest.approx(fid(g, h), rel=1e-9) and base_v == pytest.approx(fvd(g, h), rel=1e-9)
    f = {k: frechet_distance_of(frame_features(v, frames), ref_f) for k, v in sets.items()}
    v = {k: frechet_distance_of(window_features(x, windows), ref_w) for k, x in sets.items()}
    assert base < 10  # measured ~3.5
    assert f["noised"] > 5 * base  # measured ~16x
    assert f["blurred"] > 3 * base  # measured ~6x
    assert f["shuffled"] == pytest.approx(base, rel=0.01)  # same frames, other order
    assert v["shuffled"] > 10 * base_v  # measured ~50x
    assert v["noised"] > 10 * base_v  # measured ~100x
    assert v["blurred"] > 2.5 * base_v  # measured ~6x


def test_identity_error_and_jitter(gt, held_out):
    own = [identity_error(c.frames, c.frames[0]) for c in gt]
    other = [identity_error(c.frames, h.frames[0]) for c, h in zip(gt, held_out)]
    assert np.mean(own) < 0.06 and np.mean(other) > 4 * np.mean(own)  # measured 0.03 vs 0.28
    rng = np.random.default_rng(2)
    calm = np.mean([temporal_jitter(c.frames) for c in gt])
    noisy = np.mean([temporal_jitter(np.clip(c.frames + rng.normal(0, 4, c.frames.shape), 0, 255).astype(np.uint8)) for c in gt])
    shuffled = np.mean([temporal_jitter(c.frames[rng.permutation(len(c.frames))]) for c in gt])
    assert calm < 1.0 and noisy > 8 * calm and shuffled > 8 * calm  # measured 0.25, ~8, ~9


def test_evaluate_cli_on_clip_folders_and_mp4_files(gt, tmp_path, capsys):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    for c in gt[:3]:
        write_clip(dataset=ref, clip_id=c.id, frames=c.frames, audio=c.audio)
        desynced = _delay(c.audio, 6)
        write_clip(dataset=pred, clip_id=c.id, frames=c.frames, audio=desynced, lossless=False)
    out = tmp_path / "eval.json"
    evaluate_main(["--pred", str(pred), "--ref", str(ref), "--out", str(out)])
    table = capsys.readouterr().out
    assert "LSE-C" in table and "FID analogue" in table
    result = json.loads(out.read_text())
    s = result["summary"]
    assert s["clips"] == 3 and s["ref_sync_in_sync"] == 1.0
    assert all(abs(r["sync_offset"] - 6) <= 1 for r in result["per_clip"])
    assert s["identity_error"] < 0.06 and s["mouth_mae"] < 0.05

    # A folder of mp4 files (H.264 + AAC) as pred, matched by file stem.
    import av

    files = tmp_path / "mp4"
    files.mkdir()
    for c in gt[:2]:
        with av.open(str(files / f"{c.id}.mp4"), "w") as box:
            vs = box.add_stream("libx264", rate=25)
            vs.width = vs.height = c.frames.shape[1]
            vs.pix_fmt = "yuv420p"
            au = box.add_stream("aac", rate=16000)
            au.layout = "mono"
            for f in c.frames:
                box.mux(vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
            box.mux(vs.encode())
            for i in range(0, len(c.audio), 1024):
                af = av.AudioFrame.from_ndarray(c.audio[None, i : i + 1024], format="flt", layout="mono")
                af.sample_rate, af.pts = 16000, i
                box.mux(au.encode(af))
            box.mux(au.encode())
    evaluate_main(["--pred", str(files), "--ref", str(ref), "--out", str(tmp_path / "e2.json")])
    rows = json.loads((tmp_path / "e2.json").read_text())["per_clip"]
    assert [r["id"] for r in rows] == [c.id for c in gt[:2]]
    assert all(abs(r["sync_offset"]) <= 1 for r in rows)  # AAC delay is well under a frame or two
    write_clip(dataset=pred, clip_id="stranger", frames=gt[0].frames, audio=gt[0].audio)
    with pytest.raises(ValueError, match="no ref clip"):
        evaluate_main(["--pred", str(pred), "--ref", str(ref), "--out", str(out)])
