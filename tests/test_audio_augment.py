"""train.audio_augment: microphone / video-call audio augmentation (CPU, a few seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from train import audio_augment as aa

SR = 16000


def speech_like(seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    """A harmonic tone (f0 ~140 Hz with vibrato, 12 harmonics) at a 4 Hz syllable rate, plus a little noise."""
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * (140 * t + 3 * np.sin(2 * np.pi * 5 * t))
    voiced = sum(np.sin(k * phase) / k for k in range(1, 13))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.5
    noise = 0.02 * np.random.default_rng(7).standard_normal(t.size)
    return (0.3 * voiced * envelope + noise).astype(np.float32)


def tone(hz: float, seconds: float = 1.0, amplitude: float = 0.5, sr: int = SR) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def db(a: float, b: float) -> float:
    return 20 * np.log10(a / b)


def best_lag(y: np.ndarray, x: np.ndarray, max_lag: int) -> tuple[int, float]:
    """The lag of ``y`` behind ``x`` with the highest normalised correlation, and that correlation."""
    best = (0, -np.inf)
    for lag in range(-max_lag, max_lag + 1):
        a, b = (y[lag:], x[: x.size - lag]) if lag >= 0 else (y[: y.size + lag], x[-lag:])
        c = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
        best = max(best, (lag, c), key=lambda item: item[1])
    return best


@pytest.mark.parametrize("name", aa.ORDER)
def test_each_transform_applies_deterministically(name):
    x = speech_like()
    fn = aa.TRANSFORMS[name]
    y, params = fn(x, sample_rate=SR, rng=np.random.default_rng(0))
    assert y.dtype == np.float32 and y.shape == x.shape and np.isfinite(y).all()
    assert not np.array_equal(y, x), f"{name} left the audio unchanged ({params})"
    json.dumps(params)  # loggable
    y2, params2 = fn(x, sample_rate=SR, rng=np.random.default_rng(0))
    assert np.array_equal(y, y2) and params == params2
    others = [fn(x, sample_rate=SR, rng=np.random.default_rng(seed))[0] for seed in range(1, 6)]
    assert any(not np.array_equal(y, other) for other in others), f"{name} ignores the seed"
    assert np.array_equal(x, speech_like()), "the input was modified in place"


@pytest.mark.parametrize("n", [1, 37, 4001])
def test_odd_lengths_keep_their_length(n):
    x = speech_like()[:n]
    for seed in range(3):
        y, applied = aa.augment_audio(x, sample_rate=SR, rng=np.random.default_rng(seed), p=1.0)
        assert y.shape == (n,) and y.dtype == np.float32 and np.isfinite(y).all()
        assert len(applied) == len(aa.ORDER)


def test_other_sample_rates():
    for sr in (8000, 22050, 44100):
        x = speech_like(0.5, sr)
        y, applied = aa.augment_audio(x, sample_rate=sr, rng=np.random.default_rng(3), p=1.0)
        assert y.shape == x.shape and np.isfinite(y).all() and len(applied) == len(aa.ORDER)


def test_telephone_band():
    def gain_db(hz: float) -> float:
        x = tone(hz)
        y = aa.telephone(x, sample_rate=SR)
        assert y.dtype == np.float32 and y.shape == x.shape
        middle = slice(SR // 10, -SR // 10)  # away from the edges' transients
        return db(rms(y[middle]), rms(x[middle]))

    assert gain_db(100) <= -20
    assert gain_db(6000) <= -20
    assert abs(gain_db(1000)) <= 3


@pytest.mark.parametrize("codec", ["mp3", "aac", "opus"])
def test_codec_round_trip_is_aligned(codec):
    x = speech_like()
    for bitrate in (16000, 64000):
        y = aa.codec_round_trip(x, sample_rate=SR, codec=codec, bitrate=bitrate)
        assert y.dtype == np.float32 and y.shape == x.shape and np.isfinite(y).all()
        lag, corr = best_lag(y, x, max_lag=SR // 50)
        assert abs(lag) <= SR // 1000, f"{codec} at {bitrate}: {lag} samples late"
        if bitrate == 64000 and codec in ("mp3", "aac"):
            assert corr > 0.9, f"{codec} at {bitrate}: correlation {corr:.3f}"
        assert corr > 0.5


@pytest.mark.parametrize("sr", [22050, 44100])
def test_codec_round_trip_at_other_rates(sr):
    x = speech_like(0.5, sr)
    for codec in aa.CODECS:  # opus has no 22050 / 44100: resampled to 24000 / 48000 and back
        y = aa.codec_round_trip(x, sample_rate=sr, codec=codec, bitrate=64000)
        lag, _ = best_lag(y, x, max_lag=sr // 50)
        assert y.shape == x.shape and abs(lag) <= sr // 1000, (codec, lag)


def test_codec_errors(monkeypatch):
    x = speech_like(0.1)
    with pytest.raises(ValueError, match="codec must be one of"):
        aa.codec_round_trip(x, sample_rate=SR, codec="wma", bitrate=32000)
    with pytest.raises(ValueError, match="bit/s"):
        aa.codec_round_trip(x, sample_rate=SR, codec="mp3", bitrate=64)
    monkeypatch.setitem(aa.CODECS, "mp3", ("no_such_encoder", "mp3"))
    with pytest.raises(RuntimeError, match="no_such_encoder"):
        aa.codec_round_trip(x, sample_rate=SR, codec="mp3", bitrate=32000)


def test_resample_to_8k_removes_6k_tone():
    high, low = tone(6000), tone(1000)
    middle = slice(SR // 10, -SR // 10)
    removed = aa.resample_round_trip(high, sample_rate=SR, rate=8000)
    assert db(rms(removed[middle]), rms(high[middle])) <= -40
    kept = aa.resample_round_trip(low, sample_rate=SR, rate=8000)
    assert abs(db(rms(kept[middle]), rms(low[middle]))) <= 0.5
    cheap = aa.resample_round_trip(high, sample_rate=SR, rate=8000, cheap=True)
    assert rms(cheap[middle]) > 10 * rms(removed[middle])  # the cheap filter lets aliases through
    draws = [aa.TRANSFORMS["resample"](high, sample_rate=SR, rng=np.random.default_rng(s))[1] for s in range(20)]
    assert {d["rate"] for d in draws} <= {8000, 11025, 12000}  # only rates below the input's


def test_reverb_lengthens_a_click():
    x = np.zeros(SR, np.float32)
    x[1600] = 1.0
    after = slice(1600 + SR // 20, 1600 + SR // 5)  # 50-200 ms after the click
    assert rms(x[after]) == 0
    for seed in range(5):
        y, params = aa.TRANSFORMS["reverb"](x, sample_rate=SR, rng=np.random.default_rng(seed))
        assert 0.15 <= params["rt60_s"] <= 0.9 and 0.0 <= params["predelay_ms"] <= 20.0
        assert np.sum(y[after].astype(np.float64) ** 2) > 1e-6 * np.sum(y.astype(np.float64) ** 2)
        assert int(np.argmax(np.abs(y))) == 1600  # the direct path stays where it was
        assert np.abs(y[:1600]).max() < 1e-9  # causal (FFT convolution: rounding only)


def test_noise_snr():
    x = tone(300)
    x[SR // 2 :] = 0  # half speech, half silence: the SNR is over the speech only
    seen = set()
    for seed in range(40):
        y, params = aa.TRANSFORMS["noise"](x, sample_rate=SR, rng=np.random.default_rng(seed))
        assert 5 <= params["snr_db"] <= 30
        noise = y.astype(np.float64) - x
        measured = db(rms(x[: SR // 2]), rms(noise))
        assert abs(measured - params["snr_db"]) <= 1.0, (params, measured)
        assert rms(noise[SR // 2 :]) > 0  # the pauses are noisy too
        seen.add(params["kind"])
    assert seen == set(aa.NOISE_KINDS)


def test_hum_is_at_mains_frequency():
    x = tone(1000, amplitude=0.1)
    for seed in range(40):
        y, params = aa.TRANSFORMS["noise"](x, sample_rate=SR, rng=np.random.default_rng(seed))
        if params["kind"] == "hum":
            spectrum = np.abs(np.fft.rfft(y - x))
            assert int(np.argmax(spectrum[:500])) in (params["hum_hz"], 2 * params["hum_hz"], 3 * params["hum_hz"])
            return
    pytest.fail("no hum in 40 draws")


def test_gain_clip_stays_in_full_scale():
    x = speech_like()
    driven = 0
    for seed in range(30):
        y, params = aa.TRANSFORMS["gain_clip"](x, sample_rate=SR, rng=np.random.default_rng(seed))
        assert np.abs(y).max() <= 1.0
        assert -20 <= params["gain_db"] <= 20 or params["driven"]
        if params["driven"]:
            driven += 1
            assert params["clipped_fraction"] > 0
            assert 1.5 <= np.abs(x).max() * 10 ** (params["gain_db"] / 20) <= 4.0 + 1e-6
    assert 0 < driven < 30


def test_dc_offset_shifts_the_mean():
    x = speech_like()
    for seed in range(5):
        y, params = aa.TRANSFORMS["dc_offset"](x, sample_rate=SR, rng=np.random.default_rng(seed))
        assert 0.01 <= abs(params["offset"]) <= 0.1
        assert np.mean(y, dtype=np.float64) - np.mean(x, dtype=np.float64) == pytest.approx(params["offset"], abs=1e-6)


def test_band_limit_and_stereo_modes():
    x = speech_like()
    modes = {aa.TRANSFORMS["band_limit"](x, sample_rate=SR, rng=np.random.default_rng(s))[1]["mode"] for s in range(20)}
    assert modes == {"telephone", "lowpass", "highpass"}
    stereo = [aa.TRANSFORMS["stereo_mono"](x, sample_rate=SR, rng=np.random.default_rng(s)) for s in range(20)]
    assert {p["mode"] for _, p in stereo} == {"normal", "inverted", "silent"}
    for y, p in stereo:
        assert 0 <= p["delay_samples"] <= SR // 1000
        if p["mode"] == "silent":
            np.testing.assert_allclose(y, x / 2, atol=1e-7)


def test_augment_audio_order_and_probability():
    x = speech_like()
    y, applied = aa.augment_audio(x, sample_rate=SR, rng=np.random.default_rng(0), p=1.0)
    assert [a["name"] for a in applied] == list(aa.ORDER)
    assert y.dtype == np.float32 and y.shape == x.shape and np.isfinite(y).all()
    json.dumps(applied)
    y2, applied2 = aa.augment_audio(x, sample_rate=SR, rng=np.random.default_rng(0), p=1.0)
    assert np.array_equal(y, y2) and applied == applied2

    y, applied = aa.augment_audio(x, sample_rate=SR, rng=np.random.default_rng(0), p=0.0)
    assert applied == [] and np.array_equal(y, x) and y.dtype == np.float32

    _, applied = aa.augment_audio(x, sample_rate=SR, rng=np.random.default_rng(0), p=1.0,
                                  transforms=["dc_offset", "noise"])
    assert [a["name"] for a in applied] == ["noise", "dc_offset"]  # the documented order, not the caller's

    counts = [len(aa.augment_audio(x, sample_rate=SR, rng=np.random.default_rng(s), p=0.5,
                                   transforms=["dc_offset", "gain_clip"])[1]) for s in range(20)]
    assert 0 < sum(counts) < 40


def test_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"shape \(S,\).*\(2, 100\)"):
        aa.augment_audio(np.zeros((2, 100), np.float32), sample_rate=SR, rng=rng)
    with pytest.raises(ValueError, match=r"shape \(S,\)"):
        aa.augment_audio(np.zeros(0, np.float32), sample_rate=SR, rng=rng)
    bad = speech_like(0.1)
    bad[5] = np.nan
    with pytest.raises(ValueError, match="finite"):
        aa.augment_audio(bad, sample_rate=SR, rng=rng)
    bad[5] = np.inf
    with pytest.raises(ValueError, match="finite"):
        aa.TRANSFORMS["noise"](bad, sample_rate=SR, rng=rng)
    with pytest.raises(ValueError, match="float"):
        aa.augment_audio(np.zeros(100, np.int16), sample_rate=SR, rng=rng)
    with pytest.raises(ValueError, match="sample_rate"):
        aa.augment_audio(speech_like(0.1), sample_rate=0, rng=rng)
    with pytest.raises(ValueError, match="p must be"):
        aa.augment_audio(speech_like(0.1), sample_rate=SR, rng=rng, p=1.5)
    with pytest.raises(ValueError, match=r"known:.*stereo_mono"):
        aa.augment_audio(speech_like(0.1), sample_rate=SR, rng=rng, transforms=["noise", "echo"])
    with pytest.raises(ValueError, match="telephone needs"):
        aa.telephone(speech_like(0.1, 4000), sample_rate=4000)
