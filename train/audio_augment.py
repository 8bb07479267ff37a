"""Audio augmentation for training: how a microphone and a video call deliver speech.

Every transform takes mono float32 audio ``(S,)`` at ``sample_rate`` (16000 Hz in this project) and returns
float32 ``(S,)`` of exactly the same length, finite, and time-aligned with the input (filters are zero-phase,
the codec's priming delay is removed, reverb keeps the direct path at lag 0). Randomness comes only from the
``np.random.Generator`` passed in: the same seed gives bit-identical output.

:data:`TRANSFORMS` maps a name to ``fn(audio, *, sample_rate, rng) -> (audio, params)``; ``params`` is a
JSON-serialisable dict of what was drawn, for logging. :func:`augment_audio` applies them in :data:`ORDER`.

- ``stereo_mono``: a stereo capture averaged to mono. The second channel is 1-12 dB quieter, delayed by
  0-1 ms, and in 20 % of draws polarity-inverted (comb filtering) or in 20 % silent (-6 dB).
- ``reverb``: convolution with a synthetic room impulse response: direct path at lag 0, pre-delay 0-20 ms,
  then Gaussian noise decaying 60 dB over RT60 0.15-0.9 s, direct-to-reverberant ratio -5..+10 dB;
  wet/dry mix 0.3-1.0; the tail past the input's end is cut.
- ``noise``: background noise at SNR 5-30 dB relative to the speech's RMS over non-silent 20 ms frames
  (:func:`active_rms`; the noise's RMS is over the whole clip). Kinds: white, pink (1/f), brown (1/f²),
  mains hum (50 or 60 Hz with 3-8 harmonics) and babble (3-7 circular shifts of the clip itself, summed,
  lowpassed at 1.5-4 kHz). ``params["snr_db"]`` is the SNR applied exactly.
- ``band_limit``: the telephone band (300-3400 Hz Butterworth bandpass, 40 % of draws), a lowpass at
  2-7 kHz (30 %) or a highpass at 80-300 Hz (30 %): 4th-order Butterworth run forwards and backwards
  (zero phase, -6 dB at the band edges).
- ``resample``: down to a rate in :data:`RESAMPLE_RATES` below the input rate and back
  (:func:`resample_round_trip`); in 30 % of draws with a cheap, short anti-aliasing filter that aliases.
- ``codec``: lossy round trip through PyAV (:func:`codec_round_trip`): mp3 (libmp3lame), AAC (aac) or
  Opus (libopus) at 16-64 kbit/s.
- ``gain_clip``: gain -20..+20 dB, or in 30 % of draws a gain that drives the peak to 1.5-4x full scale;
  then hard clipping at ±1.
- ``dc_offset``: a constant offset of ±0.01..0.1.

:func:`telephone` and :func:`codec_round_trip` are deterministic and usable outside training.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Iterable
from typing import Any

import av
import numpy as np
from scipy import signal

Params = dict[str, Any]
Transform = Callable[..., tuple[np.ndarray, Params]]

#: the order :func:`augment_audio` applies transforms in: capture, room, channel, transmission, playback
ORDER = ("stereo_mono", "reverb", "noise", "band_limit", "resample", "codec", "gain_clip", "dc_offset")
#: rates the ``resample`` transform goes down to
RESAMPLE_RATES = (8000, 11025, 12000, 22050, 32000, 44100, 48000)
#: codec name -> (PyAV encoder, container written to memory)
CODECS = {"mp3": ("libmp3lame", "mp3"), "aac": ("aac", "adts"), "opus": ("libopus", "ogg")}
#: bit rates the ``codec`` transform draws from (bit/s)
CODEC_BITRATES = (16000, 24000, 32000, 48000, 64000)
NOISE_KINDS = ("white", "pink", "brown", "hum", "babble")


def check_audio(audio: np.ndarray, sample_rate: int | None = None) -> np.ndarray:
    """``audio`` as float32 ``(S,)``; ValueError if it is not 1-D, empty, not real or not finite."""
    audio = np.asarray(audio)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"audio must be mono with shape (S,), S > 0; got shape {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"audio must be float (float32, in [-1, 1]) of shape (S,); got dtype {audio.dtype}")
    if not np.isfinite(audio).all():
        raise ValueError(f"audio of shape (S,) must be finite; got {int((~np.isfinite(audio)).sum())} NaN/inf")
    if sample_rate is not None and (int(sample_rate) != sample_rate or sample_rate <= 0):
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    return audio.astype(np.float32, copy=False)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` cut or zero-padded to ``n`` samples, float32."""
    x = np.asarray(x, dtype=np.float32)
    return x[:n] if x.size >= n else np.pad(x, (0, n - x.size))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def active_rms(audio: np.ndarray, *, sample_rate: int, floor_db: float = 40.0) -> float:
    """RMS over the 20 ms frames within ``floor_db`` of the loudest frame (the speech, not the pauses)."""
    n = max(1, sample_rate // 50)
    x = np.asarray(audio, dtype=np.float64)
    frames = np.pad(x, (0, -x.size % n)).reshape(-1, n)
    energy = np.mean(frames**2, axis=1)
    active = energy >= energy.max() * 10 ** (-floor_db / 10)
    return float(np.sqrt(energy[active].mean()))


def _filter(x: np.ndarray, sos: np.ndarray) -> np.ndarray:
    """Zero-phase filtering that also works on clips shorter than scipy's default padding."""
    padlen = min(3 * (2 * len(sos) + 1), x.size - 1)
    return signal.sosfiltfilt(sos, x.astype(np.float64), padlen=padlen)


def _cutoff(hz: float, sample_rate: int) -> float:
    return min(hz, 0.45 * sample_rate)


def resample_round_trip(audio: np.ndarray, *, sample_rate: int, rate: int, cheap: bool = False) -> np.ndarray:
    """Down (or up) to ``rate`` and back with ``resample_poly`` (zero phase); ``cheap`` uses an anti-aliasing
    filter a fifth of scipy's default length that lets aliases through, as cheap sound-card resamplers do."""
    x = check_audio(audio, sample_rate).astype(np.float64)
    if int(rate) != rate or rate <= 0:
        raise ValueError(f"rate must be a positive integer, got {rate!r}")
    g = math.gcd(int(rate), int(sample_rate))
    up, down = int(rate) // g, int(sample_rate) // g
    window: Any = ("kaiser", 5.0)
    if cheap:  # same cutoff as scipy's default design, a fifth of its length
        window = signal.firwin(4 * max(up, down) + 1, 1.0 / max(up, down), window="hann")
    low = signal.resample_poly(x, up, down, window=window)
    return _fit(signal.resample_poly(low, down, up, window=window), x.size)


def telephone(audio: np.ndarray, *, sample_rate: int) -> np.ndarray:
    """8 kHz narrowband speech: 300-3400 Hz bandpass, down to 8000 Hz and back to ``sample_rate``."""
    x = check_audio(audio, sample_rate)
    if sample_rate < 8000:
        raise ValueError(f"telephone needs sample_rate >= 8000, got {sample_rate}")
    sos = signal.butter(4, [300, 3400], btype="bandpass", fs=sample_rate, output="sos")
    return resample_round_trip(_filter(x, sos), sample_rate=sample_rate, rate=8000)


def _encoder(codec: str) -> tuple[str, str]:
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {tuple(CODECS)}, got {codec!r}")
    encoder, container = CODECS[codec]
    try:
        av.codec.Codec(encoder, "w")
    except (av.FFmpegError, ValueError) as err:  # PyAV raises UnknownCodecError (a ValueError)
        raise RuntimeError(f"this PyAV's FFmpeg has no {encoder!r} encoder, needed for codec {codec!r}") from err
    return encoder, container


def _encode_decode(x: np.ndarray, *, sample_rate: int, codec: str, bitrate: int) -> np.ndarray:
    """Encode ``x`` into an in-memory file and decode it, back at ``sample_rate`` (not yet aligned)."""
    encoder, container = _encoder(codec)
    rates = sorted(av.codec.Codec(encoder, "w").audio_rates or [sample_rate])
    enc_rate = sample_rate if sample_rate in rates else next((r for r in rates if r >= sample_rate), rates[-1])
    if enc_rate != sample_rate:
        g = math.gcd(enc_rate, sample_rate)
        x = signal.resample_poly(x, enc_rate // g, sample_rate // g)
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(encoder, rate=enc_rate, layout="mono")
        stream.bit_rate = int(bitrate)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x, dtype=np.float32)[None], format="flt",
                                           layout="mono")
        frame.sample_rate, frame.pts = enc_rate, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    buf.seek(0)
    chunks, dec_rate = [], enc_rate
    with av.open(buf, "r") as inp:
        for f in inp.decode(inp.streams.audio[0]):
            a = f.to_ndarray()
            a = a if f.format.is_planar else a.reshape(-1, f.layout.nb_channels).T
            if a.dtype.kind in "iu":
                a = a / float(np.iinfo(a.dtype).max)
            chunks.append(a.astype(np.float64).mean(axis=0))
            dec_rate = f.sample_rate
    y = np.concatenate(chunks) if chunks else np.zeros(0)
    if dec_rate != sample_rate:
        g = math.gcd(dec_rate, sample_rate)
        y = signal.resample_poly(y, sample_rate // g, dec_rate // g)
    return y


def _lag(y: np.ndarray, x: np.ndarray, max_lag: int) -> int:
    """The lag (samples, > 0: ``y`` late) in [-max_lag, max_lag] maximising the cross-correlation."""
    n = 1 << int(np.ceil(np.log2(x.size + y.size)))
    corr = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(x, n)), n)
    lags = np.r_[0 : max_lag + 1, -max_lag:0]
    return int(lags[np.argmax(corr[lags])])


@functools.lru_cache(maxsize=64)
def _codec_delay(codec: str, bitrate: int, sample_rate: int) -> int:
    """The round trip's delay (priming samples the container does not trim), in samples at ``sample_rate``,
    measured once per setting by cross-correlating a fixed broadband probe (a codec's delay is fixed)."""
    t = np.arange(sample_rate) / sample_rate
    probe = 0.1 * np.random.default_rng(1234).standard_normal(sample_rate)  # local, fixed: not global state
    probe *= (np.sin(2 * np.pi * 3 * t) > 0)  # bursts: one unambiguous correlation peak
    probe += 0.2 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    y = _encode_decode(probe, sample_rate=sample_rate, codec=codec, bitrate=bitrate)
    return _lag(y, probe, max_lag=sample_rate // 5)


def codec_round_trip(audio: np.ndarray, *, sample_rate: int, codec: str, bitrate: int) -> np.ndarray:
    """Encode and decode ``audio`` with ``codec`` in ("mp3", "aac", "opus") at ``bitrate`` bit/s, in memory.

    Rates the encoder lacks are resampled to and from; the codec's priming delay and padding are removed, so
    the output is time-aligned with the input (within a sample) and has its length. RuntimeError if this
    PyAV's FFmpeg lacks the encoder."""
    x = check_audio(audio, sample_rate)
    if not 8000 <= bitrate <= 512000:
        raise ValueError(f"bitrate is in bit/s (8000-512000), got {bitrate}")
    y = _encode_decode(x.astype(np.float64), sample_rate=sample_rate, codec=codec, bitrate=bitrate)
    delay = _codec_delay(codec, int(bitrate), int(sample_rate))
    y = y[delay:] if delay >= 0 else np.pad(y, (-delay, 0))
    return _fit(y, x.size)


#: name -> fn(audio, *, sample_rate, rng) -> (audio, params), filled by :func:`_transform`
TRANSFORMS: dict[str, Transform] = {}


def _transform(name: str) -> Callable[[Transform], Transform]:
    """Register ``fn`` in TRANSFORMS under ``name``, checking its input and its output's length and dtype."""

    def register(fn: Transform) -> Transform:
        @functools.wraps(fn)
        def checked(audio: np.ndarray, *, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
            x = check_audio(audio, sample_rate)
            y, params = fn(x, sample_rate=int(sample_rate), rng=rng)
            return _fit(y, x.size), params

        TRANSFORMS[name] = checked
        return checked

    return register


@_transform("gain_clip")
def _gain_clip(audio: np.ndarray, *, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """Gain -20..+20 dB, or (30 %) drive the peak to 1.5-4x full scale; then clip at ±1."""
    peak = float(np.abs(audio).max())
    driven = bool(rng.random() < 0.3) and peak > 0
    gain_db = 20 * math.log10(rng.uniform(1.5, 4.0) / peak) if driven else rng.uniform(-20.0, 20.0)
    y = np.clip(audio.astype(np.float64) * 10 ** (gain_db / 20), -1.0, 1.0)
    return _fit(y, audio.size), {"gain_db": float(gain_db), "driven": driven,
                                 "clipped_fraction": float(np.mean(np.abs(y) >= 1.0))}


def _noise_signal(audio: np.ndarray, kind: str, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    n, extra = audio.size, {}
    if kind in ("white", "pink", "brown"):
        x = rng.standard_normal(n)
        if kind != "white":
            f = np.maximum(np.fft.rfftfreq(n, 1.0 / sample_rate), 20.0)  # nothing below 20 Hz grows
            x = np.fft.irfft(np.fft.rfft(x) / f ** (0.5 if kind == "pink" else 1.0), n)
    elif kind == "hum":
        f0, harmonics, slope = int(rng.choice([50, 60])), int(rng.integers(3, 9)), rng.uniform(0.5, 1.5)
        t, x = np.arange(n) / sample_rate, np.zeros(n)
        for k in range(1, harmonics + 1):
            phase = rng.uniform(0, 2 * np.pi)
            if k * f0 < sample_rate / 2:
                x += k**-slope * np.sin(2 * np.pi * k * f0 * t + phase)
        extra = {"hum_hz": f0, "harmonics": harmonics}
    else:  # babble: the clip's own speech from other "talkers"
        talkers, cutoff = int(rng.integers(3, 8)), _cutoff(rng.uniform(1500.0, 4000.0), sample_rate)
        x = sum(rng.uniform(0.5, 1.0) * np.roll(audio.astype(np.float64), int(rng.integers(n // 10, n - n // 10 + 1)))
                for _ in range(talkers))
        x = signal.sosfilt(signal.butter(4, cutoff, fs=sample_rate, output="sos"), x)
        extra = {"talkers": talkers, "lowpass_hz": float(cutoff)}
    return np.asarray(x, dtype=np.float64), extra


@_transform("noise")
def _noise(audio: np.ndarray, *, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """Background noise (white, pink, brown, hum, babble) at SNR 5-30 dB over the speech's active RMS."""
    kind, snr_db = str(rng.choice(NOISE_KINDS)), float(rng.uniform(5.0, 30.0))
    x, extra = _noise_signal(audio, kind, sample_rate, rng)
    if _rms(x) == 0.0:  # babble of a silent clip
        kind, x, extra = "white", rng.standard_normal(audio.size), {}
    speech = active_rms(audio, sample_rate=sample_rate) or 0.01  # a silent clip: as if speech at -40 dBFS
    x *= speech / (_rms(x) * 10 ** (snr_db / 20))
    return _fit(audio + x, audio.size), {"kind": kind, "snr_db": snr_db, **extra}


@_transform("reverb")
def _reverb(audio: np.ndarray, *, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """A synthetic room: direct path, pre-delay, exponentially decaying noise tail (RT60); wet/dry mix."""
    rt60, predelay_ms = rng.uniform(0.15, 0.9), rng.uniform(0.0, 20.0)
    drr_db, wet = rng.uniform(-5.0, 10.0), rng.uniform(0.3, 1.0)
    n_tail, start = max(1, int(rt60 * sample_rate)), 1 + int(predelay_ms * sample_rate / 1000)
    tail = rng.standard_normal(n_tail) * np.exp(-3 * math.log(10) * np.arange(n_tail) / (rt60 * sample_rate))
    tail *= math.sqrt(10 ** (-drr_db / 10) / np.sum(tail**2))  # tail energy relative to the direct path's 1
    rir = np.zeros(start + n_tail)
    rir[0], rir[start:] = 1.0, tail
    rir /= np.sqrt(np.sum(rir**2))  # unit energy: the level stays about the same
    reverberant = signal.fftconvolve(audio.astype(np.float64), rir)[: audio.size]
    y = (1 - wet) * audio + wet * reverberant
    return _fit(y, audio.size), {"rt60_s": float(rt60), "predelay_ms": float(predelay_ms),
                                 "drr_db": float(drr_db), "wet": float(wet)}


@_transform("band_limit")
def _band_limit(audio: np.ndarray, *, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """Telephone band 300-3400 Hz (40 %), lowpass 2-7 kHz (30 %) or highpass 80-300 Hz (30 %)."""
    u = rng.random()
    if u < 0.4 and sample_rate >= 8000:
        mode, params = "telephone", {"low_hz": 300.0, "high_hz": 3400.0}
        sos = signal.butter(4, [300, 3400], btype="bandpass", fs=sample_rate, output="sos")
    elif u < 0.7:
        mode, cutoff = "lowpass", _cutoff(rng.uniform(2000.0, 7000.0), sample_rate)
        params, sos = {"cutoff_hz": float(cutoff)}, signal.butter(4, cutoff, fs=sample_rate, output="sos")
    else:
        mode, cutoff = "highpass", _cutoff(rng.uniform(80.0, 300.0), sample_rate)
        params = {"cutoff_hz": float(cutoff)}
        sos = signal.butter(4, cutoff, btype="highpass", fs=sample_rate, output="sos")
    return _fit(_filter(audio, sos), audio.size), {"mode": mode, **params}


@_transform("resample")
def _resample(audio: np.ndarray, *, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """Down to a rate in RESAMPLE_RATES below ``sample_rate`` and back; 30 % with a cheap, aliasing filter."""
    lower = [r for r in RESAMPLE_RATES if r < sample_rate] or list(RESAMPLE_RATES)
    rate, cheap = int(rng.choice(lower)), bool(rng.random() < 0.3)
    y = resample_round_trip(audio, sample_rate=sample_rate, rate=rate, cheap=cheap)
    return y, {"rate": rate, "cheap_filter": cheap}


@_transform("codec")
def _codec(audio: np.ndarray, *, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """A lossy codec round trip: mp3, aac or opus at 16-64 kbit/s."""
    codec, bitrate = str(rng.choice(list(CODECS))), int(rng.choice(CODEC_BITRATES))
    y = codec_round_trip(audio, sample_rate=sample_rate, codec=codec, bitrate=bitrate)
    return y, {"codec": codec, "bitrate": bitrate}


@_transform("dc_offset")
def _dc_offset(audio: np.ndarray, *, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """A constant offset of ±0.01..0.1."""
    offset = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.01, 0.1))
    return _fit(audio.astype(np.float64) + offset, audio.size), {"offset": offset}


@_transform("stereo_mono")
def _stereo_mono(audio: np.ndarray, *, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """Two channels (the second 1-12 dB quieter, 0-1 ms late, sometimes inverted or silent) averaged."""
    gain_db, delay_ms = rng.uniform(1.0, 12.0), rng.uniform(0.0, 1.0)
    u = rng.random()
    mode = "inverted" if u < 0.2 else "silent" if u < 0.4 else "normal"
    delay = min(round(delay_ms * sample_rate / 1000), audio.size)
    x = audio.astype(np.float64)
    second = np.concatenate([np.zeros(delay), x[: x.size - delay]]) * 10 ** (-gain_db / 20)
    second *= {"normal": 1.0, "inverted": -1.0, "silent": 0.0}[mode]
    return _fit((x + second) / 2, audio.size), {"mode": mode, "gain_db": float(gain_db),
                                                "delay_samples": delay}


assert set(TRANSFORMS) == set(ORDER)


def augment_audio(audio: np.ndarray, *, sample_rate: int, rng: np.random.Generator, p: float = 0.5,
                  transforms: Iterable[str] | None = None) -> tuple[np.ndarray, list[Params]]:
    """Apply each transform (or each of ``transforms``) with probability ``p``, in :data:`ORDER`.

    Returns float32 audio of the input's length and ``[{"name": ..., **params}, ...]`` of what was applied."""
    x = check_audio(audio, sample_rate).copy()
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    names = ORDER if transforms is None else tuple(transforms)
    unknown = sorted(set(names) - set(ORDER))
    if unknown:
        raise ValueError(f"unknown transforms {unknown}; known: {list(ORDER)}")
    applied: list[Params] = []
    for name in ORDER:
        if name in names and rng.random() < p:
            x, params = TRANSFORMS[name](x, sample_rate=sample_rate, rng=rng)
            applied.append({"name": name, **params})
    return x, applied
