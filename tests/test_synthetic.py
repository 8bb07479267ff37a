"""The synthetic talking-face world (docs/design.md §6): determinism, variety, audio-driven mouth, tiers."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from fada_rt.clips import SAMPLES_PER_FRAME, list_clips, read_clip, read_labels, read_manifest, read_wav
from train.synthetic.__main__ import main as synthetic_main
from train.synthetic.dataset import clip_identity, generate_dataset, make_clip
from train.synthetic.identity import sample_identity
from train.synthetic.motion import Motion
from train.synthetic.render import render_frames
from train.synthetic.tiers import KINDS


def test_same_seed_same_clip_bytes_different_seed_different_face():
    a = make_clip(seed=3, index=4, tier="B")
    b = make_clip(seed=3, index=4, tier="B")
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.labels == b.labels
    c = make_clip(seed=4, index=4, tier="B")
    assert a.labels["identity"] != c.labels["identity"]
    # A different face, not just a different pixel: mean colour differs clearly.
    assert np.abs(a.frames[0].astype(float).mean((0, 1)) - c.frames[0].astype(float).mean((0, 1))).max() > 5


def test_thousands_of_distinct_identities():
    faces = {tuple(np.round(list(_numbers(sample_identity(np.random.default_rng(i)).to_dict())), 3)) for i in range(3000)}
    assert len(faces) == 3000
    looks = np.array([list(_numbers(clip_identity(seed=0, index=i)[0].to_dict())) for i in range(300)])
    assert (looks.std(0) > 0).all()  # every attribute varies across identities


def _numbers(d):
    for v in d.values():
        if isinstance(v, (tuple, list)):
            yield from v
        elif isinstance(v, str):
            yield float(sum(map(ord, v)))
        else:
            yield float(v)


def test_dataset_files_are_byte_identical_and_independent_of_count_and_workers(tmp_path):
    generate_dataset(out=tmp_path / "a", clips=3, seed=11, tier="B", workers=1, progress=False)
    generate_dataset(out=tmp_path / "b", clips=4, seed=11, tier="B", workers=2, progress=False)
    for cid in ("000000", "000001", "000002"):
        for name in ("video.mkv", "audio.wav", "meta.json"):
            assert (tmp_path / "a/clips" / cid / name).read_bytes() == (tmp_path / "b/clips" / cid / name).read_bytes()
        assert read_labels(tmp_path / "a", cid) == read_labels(tmp_path / "b", cid)


def test_clip_shapes_and_frame_audio_convention():
    for size in (32, 96):
        clip = make_clip(seed=0, index=1, size=size, min_seconds=2.0, max_seconds=2.4)
        t = clip.frames.shape[0]
        assert clip.frames.shape == (t, size, size, 3) and clip.frames.dtype == np.uint8
        assert clip.audio.shape == (t * SAMPLES_PER_FRAME,) and clip.audio.dtype == np.float32
        assert 50 <= t <= 60 and np.abs(clip.audio).max() <= 1.0
        assert all(len(v) == t for v in clip.labels["frames"].values())
    with pytest.raises(ValueError, match="even"):
        render_frames(sample_identity(np.random.default_rng(0)), _still(1), size=63)


def _still(t, **states):
    z = np.zeros(t, np.float32)
    base = {"open": z, "width": z + 0.5, "blink": z, "dx": z, "dy": z, "roll": z, "brow": z}
    return Motion(**(base | {k: np.asarray(v, np.float32) for k, v in states.items()}))


def test_mouth_is_visible_at_64px():
    """An open mouth spans 14-22 px at 64x64 and is clearly darker/different than a closed one."""
    for i in range(5):
        idn = sample_identity(np.random.default_rng(100 + i))
        frames = render_frames(idn, _still(2, open=[0.0, 1.0]), size=64).astype(float)
        changed = np.abs(frames[1] - frames[0]).sum(-1) > 40  # (H, W)
        cols = np.flatnonzero(changed.any(0))
        rows = np.flatnonzero(changed.any(1))
        assert 14 <= cols[-1] - cols[0] + 1 <= 24, (i, cols)
        assert 6 <= rows[-1] - rows[0] + 1 <= 16, (i, rows)


def test_mouth_follows_audio_and_closes_in_silence():
    corr = []
    for i in range(4):
        clip = make_clip(seed=5, index=i, tier="A", min_seconds=4.0, max_seconds=4.0)
        rms = np.sqrt((clip.audio.reshape(-1, SAMPLES_PER_FRAME) ** 2).mean(1))
        mouth = np.array(clip.labels["frames"]["open"])
        silent = rms < 0.003
        assert 0.03 < silent.mean() < 0.7  # pauses exist, but it is mostly speech
        assert mouth[silent].mean() < 0.1 and mouth[~silent].max() > 0.5
        corr.append(np.corrcoef(np.log(rms + 1e-3), mouth)[0, 1])
    assert np.mean(corr) > 0.6, corr


def test_speech_has_formant_structure():
    """Voiced frames carry most energy below 1.2 kHz (F1/F2); some frames are fricative noise."""
    clip = make_clip(seed=2, index=0, min_seconds=4.0, max_seconds=4.0)
    frames = clip.audio.reshape(-1, SAMPLES_PER_FRAME)
    spec = np.abs(np.fft.rfft(frames * np.hanning(SAMPLES_PER_FRAME), axis=1)) ** 2
    freqs = np.fft.rfftfreq(SAMPLES_PER_FRAME, 1 / 16000)
    low = spec[:, (freqs > 150) & (freqs < 1200)].sum(1)
    high = spec[:, freqs > 3500].sum(1)
    loud = spec.sum(1) > np.percentile(spec.sum(1), 50)
    assert np.median(low[loud] / spec[loud].sum(1)) > 0.5
    assert (high / (spec.sum(1) + 1e-12) > 0.5).sum() >= 2  # fricatives


def test_kinds_behave_as_labelled():
    index = 7
    clean = make_clip(seed=9, index=index, tier="B", kind="clean", min_seconds=3, max_seconds=3)
    desync = make_clip(seed=9, index=index, tier="B", kind="desynced", min_seconds=3, max_seconds=3)
    off = desync.labels["offset_frames"]
    assert 5 <= abs(off) <= 25 and desync.labels["offset_seconds"] == off / 25
    np.testing.assert_array_equal(desync.frames, clean.frames)  # same video, shifted audio
    d = off * SAMPLES_PER_FRAME
    if d > 0:
        np.testing.assert_array_equal(desync.audio[d:], clean.audio[:-d])
    else:
        np.testing.assert_array_equal(desync.audio[:d], clean.audio[-d:])
    frozen = make_clip(seed=9, index=index, tier="B", kind="frozen", min_seconds=3, max_seconds=3)
    assert np.ptp(frozen.labels["frames"]["open"]) == 0 and np.ptp(clean.labels["frames"]["open"]) > 0.4
    np.testing.assert_array_equal(frozen.audio, clean.audio)
    degraded = make_clip(seed=9, index=index, tier="B", kind="degraded", min_seconds=3, max_seconds=3)
    assert np.abs(degraded.frames.astype(float) - clean.frames).mean() > 1.0
    assert degraded.labels["degradation"] is not None
    expressive = [make_clip(seed=9, index=i, tier="B", kind="expressive", min_seconds=2, max_seconds=2) for i in range(3)]
    calm = [make_clip(seed=9, index=i, tier="B", kind="clean", min_seconds=2, max_seconds=2) for i in range(3)]
    sway = [np.ptp(c.labels["frames"]["dx"]) for group in (expressive, calm) for c in group]
    assert np.mean(sway[:3]) > 1.5 * np.mean(sway[3:])


def test_tiers_and_cli(tmp_path, capsys):
    synthetic_main(["--out", str(tmp_path / "b"), "--clips", "12", "--size", "32", "--tier", "B", "--seed", "1",
                    "--min-seconds", "1", "--max-seconds", "1.2", "--workers", "1"])
    a, b = read_manifest(tmp_path / "b", "A"), read_manifest(tmp_path / "b", "B")
    assert set(a) < set(b) and len(b) == 12
    kinds = {cid: read_labels(tmp_path / "b", cid)["kind"] for cid in b}
    assert {kinds[c] for c in a} == {"clean"} and set(kinds.values()) <= set(KINDS) and len(set(kinds.values())) >= 3
    assert all(read_labels(tmp_path / "b", c)["tier"] == ("A" if kinds[c] == "clean" else "B") for c in b)
    assert '"clips": 12' in capsys.readouterr().out
    clip = read_clip(list_clips(tmp_path / "b", manifest="A")[0])
    assert clip.frames.shape[1:] == (32, 32, 3) and clip.meta["source"] == "synthetic"
    generate_dataset(out=tmp_path / "a", clips=3, tier="A", seed=1, size=32, min_seconds=1, max_seconds=1.2, progress=False)
    assert read_manifest(tmp_path / "a", "A") == ["000000", "000001", "000002"]
    assert not (tmp_path / "a/manifest_B.txt").exists()
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_dataset(out=tmp_path / "a", clips=1, progress=False)


@pytest.mark.skipif(shutil.which("flite") is None, reason="the example speech is flite's: apt-get install flite")
def test_shipped_examples_are_reproducible(tmp_path):
    from PIL import Image

    from fada_rt.assets import EXAMPLES_DIR as shipped
    from train.synthetic.examples import make_examples

    face, wav = make_examples(out=tmp_path)
    # Pixels, not PNG bytes: zlib versions may compress the same image differently.
    np.testing.assert_array_equal(np.asarray(Image.open(face)), np.asarray(Image.open(shipped / "face.png")))
    assert np.asarray(Image.open(face)).shape == (256, 256, 3)
    assert wav.read_bytes() == (shipped / "speech.wav").read_bytes()
    assert read_wav(wav).shape == (7 * 16000,)
