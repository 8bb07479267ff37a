"""World speech v2: the mouth rule (phones -> tracks), the speech engines and the clips they drive."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from scipy.ndimage import uniform_filter1d

from train.synthetic import espeak_events, tts
from train.synthetic.dataset import check_speech, clip_identity, make_clip
from train.synthetic.speech import VOWELS, vowel_openness, vowel_width
from train.synthetic.visemes import SILENCE, articulation_tracks, is_known_phone, phone_targets

SR = 16000
PANGRAM = "The quick brown fox jumps over the lazy dog, while Jim's sixty zebras hum a vague tune."


def _installed(engine: str) -> bool:
    return (espeak_events.library() is not None) if engine == "espeak" else shutil.which(engine) is not None


needs = {e: pytest.mark.skipif(not _installed(e), reason=f"{e} not installed (apt-get install {tts.PACKAGES[e]})")
         for e in tts.ENGINES}


def test_vowel_targets_follow_the_formant_rule():
    f1, f2, _ = VOWELS["a"]
    assert phone_targets("aa", "arpabet") == ((vowel_openness(f1), vowel_width(f2)),) * 2
    assert phone_targets("aa", "arpabet")[0][0] == pytest.approx(1.0)  # the most open vowel
    assert phone_targets("iy", "arpabet")[0] == pytest.approx((0.3, 1.0))  # closed, spread
    assert phone_targets("uw", "arpabet")[0][1] == pytest.approx(0.0)  # rounded
    # a diphthong glides: "ay" from open a to close I; espeak's aI is the same phone
    start, end = phone_targets("ay", "arpabet")
    assert start[0] > 0.9 and end[0] < 0.55
    assert phone_targets("aI", "espeak") == (start, end)
    # stress and length marks are dropped: 'A: is A
    assert phone_targets("'A:", "espeak") == phone_targets("A", "espeak") == phone_targets("aa", "arpabet")


def test_consonants_and_silence():
    for phone, phoneset in (("p", "arpabet"), ("b", "arpabet"), ("m", "arpabet"), ("m", "espeak")):
        assert phone_targets(phone, phoneset)[0][0] == 0.0  # lips shut
    assert phone_targets("w", "arpabet")[0][1] == 0.0  # rounded
    assert phone_targets("sh", "arpabet") == phone_targets("S", "espeak")
    for phone, phoneset in (("pau", "arpabet"), ("_:", "espeak"), ("_", "espeak")):
        assert phone_targets(phone, phoneset) == (SILENCE, SILENCE)
    assert not is_known_phone("qq", "arpabet") and not is_known_phone("~", "espeak")
    with pytest.raises(ValueError, match="phoneset"):
        phone_targets("aa", "ipa")


def test_articulation_tracks_hold_targets_and_smooth():
    phones = [("pau", 0, 4000), ("aa", 4000, 8000), ("m", 8000, 10000), ("iy", 10000, 14000), ("pau", 14000, 20000)]
    openness, width = articulation_tracks(phones, 20000, phoneset="arpabet", sample_rate=SR)
    assert openness.shape == width.shape == (20000,) and openness.dtype == np.float32
    assert openness[6000] == pytest.approx(1.0, abs=1e-3) and openness[2000] == 0.0 and openness[18000] == 0.0
    assert openness[9000] < 0.05  # m: lips shut between the vowels
    assert width[12000] == pytest.approx(1.0, abs=1e-3) and width[6000] == pytest.approx(vowel_width(1200), abs=1e-3)
    # smoothing: no jump from closed to open within a sample (coarticulation over ~60 ms)
    assert np.max(np.abs(np.diff(openness))) < 1.0 / (0.03 * SR) + 1e-3


def test_engine_names_and_the_held_out_engine():
    assert tts.parse_engines("tts") == tts.TRAIN_ENGINES
    assert "flite" not in tts.TRAIN_ENGINES and tts.HELD_OUT_ENGINES == ("flite",)
    assert tts.parse_engines("tts,flite") == ("espeak", "festival", "flite")
    with pytest.raises(ValueError, match="unknown speech engines"):
        tts.parse_engines("sam")
    rng = np.random.default_rng(0)
    engines = {tts.sample_voice(rng, tts.TRAIN_ENGINES).engine for _ in range(200)}
    assert engines == {"espeak", "festival"}
    # the training world's voices never come from flite
    assert {clip_identity(seed=0, index=i, speech="tts")[1].engine for i in range(100)} <= set(tts.TRAIN_ENGINES)


@pytest.mark.parametrize("engine", tts.ENGINES)
def test_engine_speaks_with_aligned_phones(engine):
    if not _installed(engine):
        pytest.skip(f"{engine} not installed (apt-get install {tts.PACKAGES[engine]})")
    voice = tts.Voice(engine, {"espeak": "en-us+m3", "festival": "kal_diphone", "flite": "slt"}[engine])
    (utt,) = tts.synthesize([PANGRAM], voice)
    assert utt.audio.dtype == np.float32 and 3.0 < len(utt.audio) / SR < 8.0
    starts = [a for _, a, _ in utt.phones]
    assert starts == sorted(starts) and all(b > a for _, a, b in utt.phones)
    assert utt.phones[-1][2] >= 0.9 * len(utt.audio)  # the phones cover the utterance
    assert all(is_known_phone(p, utt.phoneset) for p, _, _ in utt.phones), [p for p, _, _ in utt.phones]
    # the mouth rule's openness and the audio's loudness line up within 30 ms
    openness, _ = articulation_tracks(utt.phones, len(utt.audio), phoneset=utt.phoneset, sample_rate=SR)
    env = np.sqrt(uniform_filter1d(utt.audio.astype(np.float64) ** 2, 400))[::160]  # 10 ms hops
    o = openness[::160]
    lags = range(-10, 11)
    corr = [np.corrcoef(np.roll(o, lag), env)[0, 1] for lag in lags]
    assert max(corr) > 0.45
    assert abs(lags[int(np.argmax(corr))]) <= 3


@needs["espeak"]
@needs["festival"]
def test_tts_speech_is_deterministic_with_pauses():
    voice = tts.Voice("espeak", "en-us+f2", rate=1.1, pitch=1.2)
    a = tts.tts_speech(rng=np.random.default_rng(5), num_samples=6 * SR, voice=voice)
    b = tts.tts_speech(rng=np.random.default_rng(5), num_samples=6 * SR, voice=voice)
    assert np.array_equal(a.audio, b.audio) and np.array_equal(a.openness, b.openness)
    assert len(a.segments) >= 2  # sentences with pauses between them
    (s0, e0), (s1, _) = a.segments[:2]
    assert s1 - e0 >= 0.1 * SR
    gap = slice(e0 + int(0.08 * SR), s1 - int(0.08 * SR))
    assert a.openness[gap].max() < 0.05  # closed mouth in the pause
    assert a.openness[s0:e0].mean() > 0.2
    with pytest.raises(ValueError, match="English only"):
        tts.synthesize(["Hola"], tts.Voice("festival", "kal_diphone", language="es"))


@needs["espeak"]
@needs["festival"]
@needs["flite"]
def test_clips_of_the_real_voice_worlds():
    assert check_speech("tts") == "tts"
    for speech, engines in (("tts", set(tts.TRAIN_ENGINES)), ("flite", {"flite"})):
        clip = make_clip(seed=3, index=7, tier="A", speech=speech, min_seconds=3, max_seconds=3)
        again = make_clip(seed=3, index=7, tier="A", speech=speech, min_seconds=3, max_seconds=3)
        assert np.array_equal(clip.audio, again.audio) and np.array_equal(clip.frames, again.frames)
        labels = clip.labels
        assert labels["speech"] == speech and labels["speaker"]["engine"] in engines
        opens = np.asarray(labels["frames"]["open"])
        segments = labels["speech_segments"]
        assert segments and all(0 <= a < b <= 3.0 + 1e-6 for a, b in segments)
        spoken = np.zeros(len(opens), bool)
        for a, b in segments:
            spoken[int(a * 25) : int(np.ceil(b * 25)) + 3] = True  # the mouth closes within ~0.1 s after speech
        assert opens[~spoken].max(initial=0.0) < 0.1 and opens[spoken].max() > 0.4
