"""Speech-like audio of the synthetic world (docs/design.md §6), with its articulation tracks.

A small formant synthesiser: words of 1–3 syllables separated by pauses; a syllable is an
optional consonant (plosive: closure + burst, fricative: band noise, nasal: low hum, glide)
and a vowel whose formants (F1, F2, F3) come from a table, scaled per speaker. The voice
source is a glottal pulse train whose pitch follows phrase declination, stress accents and
vibrato; a cascade of three resonators (updated every 5 ms) shapes it.

Alongside the audio it returns per-sample *articulation*: mouth openness (from the vowel
envelope and F1: open vowels open the mouth more) and mouth width (from F2: high F2 =
spread lips, low F2 = rounded), closed in silence and bilabial closures. The renderer draws
the mouth from these, so the audio determines the mouth and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.signal import butter, lfilter, sosfilt

SAMPLE_RATE = 16000
BLOCK = 80  # samples per formant update (5 ms)

# name: (F1, F2, F3) in Hz for a reference speaker.
VOWELS = {
    "i": (280, 2250, 2900),
    "I": (400, 1900, 2550),
    "e": (450, 2050, 2650),
    "E": (550, 1770, 2490),
    "ae": (690, 1650, 2450),
    "a": (750, 1200, 2500),
    "O": (600, 900, 2450),
    "o": (480, 850, 2400),
    "U": (430, 1050, 2350),
    "u": (310, 850, 2250),
    "V": (620, 1200, 2550),
    "@": (500, 1450, 2500),
}
OPEN_VOWELS = ("a", "ae", "O", "V", "E")
CONSONANTS = ("plosive", "bilabial", "fricative_s", "fricative_sh", "fricative_f", "nasal_m", "nasal_n", "glide_w")


def vowel_openness(f1: float) -> float:
    """Mouth openness of a vowel from its (reference-speaker) F1: 280 Hz -> 0.3, 750 Hz -> 1."""
    return float(0.3 + 0.7 * np.clip((f1 - 280.0) / 470.0, 0.0, 1.0))


def vowel_width(f2: float) -> float:
    """Mouth width of a vowel from its F2: rounded (850 Hz) -> 0, spread (2250 Hz) -> 1."""
    return float(np.clip((f2 - 850.0) / 1400.0, 0.0, 1.0))


@dataclass(frozen=True)
class Speaker:
    f0: float  # base pitch in Hz
    formant_scale: float  # vocal tract length factor on all formants
    rate: float  # speaking-rate factor on durations (<1 faster)
    breath: float  # aspiration noise mixed into voicing


@dataclass(frozen=True)
class Speech:
    """Audio float32 (S,) in [-1, 1] and per-sample articulation float32 (S,) in [0, 1]; ``segments``:
    the spoken stretches as (start, stop) samples where the generator knows them (world speech v2)."""

    audio: np.ndarray
    openness: np.ndarray
    width: np.ndarray
    segments: tuple[tuple[int, int], ...] = ()


def sample_speaker(rng: np.random.Generator) -> Speaker:
    f0 = float(np.exp(rng.uniform(np.log(85.0), np.log(250.0))))
    scale = float(np.clip(1.0 + 0.2 * (np.log(f0 / 85.0) / np.log(250.0 / 85.0)) + rng.normal(0, 0.03), 0.95, 1.25))
    return Speaker(f0=f0, formant_scale=scale, rate=float(rng.uniform(0.8, 1.2)), breath=float(rng.uniform(0.0, 0.08)))


def synthesize_speech(
    *, rng: np.random.Generator, num_samples: int, speaker: Speaker, expressive: bool = False
) -> Speech:
    """Synthesise ``num_samples`` of talking (with pauses) and its articulation tracks."""
    tracks = _Tracks.empty(num_samples)
    _lay_out_words(tracks, rng, speaker, expressive)
    return _render(tracks, rng, speaker, expressive)


@dataclass
class _Tracks:
    """Per-sample targets filled syllable by syllable before smoothing and synthesis."""

    f1: np.ndarray
    f2: np.ndarray
    f3: np.ndarray
    voice: np.ndarray  # voicing amplitude
    noise: np.ndarray  # (3, S): amplitudes of high / mid / broad noise bands
    accent: np.ndarray  # pitch accent (relative)
    open: np.ndarray
    width: np.ndarray

    @staticmethod
    def empty(n: int) -> _Tracks:
        z = np.zeros(n, np.float32)
        return _Tracks(
            f1=np.full(n, 500, np.float32),
            f2=np.full(n, 1450, np.float32),
            f3=np.full(n, 2500, np.float32),
            voice=z.copy(),
            noise=np.zeros((3, n), np.float32),
            accent=z.copy(),
            open=z.copy(),
            width=np.full(n, 0.5, np.float32),
        )


def _lay_out_words(tr: _Tracks, rng: np.random.Generator, sp: Speaker, expressive: bool) -> None:
    n = tr.voice.shape[0]
    ms = SAMPLE_RATE / 1000.0 * sp.rate
    pos = int(rng.uniform(0, 250) * ms)
    while pos < n:
        stressed = int(rng.integers(0, 3))
        for k in range(int(rng.integers(1, 4))):
            pos = _syllable(tr, rng, pos, ms, accent=k == stressed, expressive=expressive)
        gap = rng.uniform(350, 800) if rng.random() < 0.2 else rng.uniform(40, 260)
        pos += int(gap * ms)


def _syllable(tr: _Tracks, rng: np.random.Generator, pos: int, ms: float, *, accent: bool, expressive: bool) -> int:
    if rng.random() < 0.75:
        pos = _consonant(tr, rng, pos, ms, str(rng.choice(CONSONANTS)))
    name = str(rng.choice(OPEN_VOWELS)) if expressive and rng.random() < 0.6 else str(rng.choice(list(VOWELS)))
    dur = rng.uniform(90, 240)
    if expressive and rng.random() < 0.5:
        dur = rng.uniform(380, 900)  # a sustained vowel
    length = int(dur * ms)
    seg = _span(tr, pos, length)
    if seg is not None:
        f1, f2, f3 = VOWELS[name]
        env = _envelope(seg.stop - seg.start, attack=int(25 * ms), release=int(45 * ms), decay=0.25)
        tr.f1[seg], tr.f2[seg], tr.f3[seg] = f1, f2, f3
        tr.voice[seg] = env * (1.15 if accent else 0.85)
        tr.open[seg] = env * vowel_openness(f1) * (1.1 if accent else 1.0)
        tr.width[seg] = vowel_width(f2)
        if accent:
            tr.accent[seg] = np.sin(np.linspace(0, np.pi, seg.stop - seg.start)) * rng.uniform(0.08, 0.3 if expressive else 0.2)
    pos += length
    if rng.random() < 0.25:
        pos = _consonant(tr, rng, pos, ms, str(rng.choice(("plosive", "fricative_s", "nasal_n"))))
    return pos


def _consonant(tr: _Tracks, rng: np.random.Generator, pos: int, ms: float, kind: str) -> int:
    if kind in ("plosive", "bilabial"):
        closure = int(rng.uniform(30, 70) * ms)  # silence; lips shut for p/b/m-like
        seg = _span(tr, pos, closure)
        if seg is not None:
            tr.open[seg] = 0.0 if kind == "bilabial" else 0.08
        burst = int(rng.uniform(10, 25) * ms)
        seg = _span(tr, pos + closure, burst)
        if seg is not None:
            tr.noise[2, seg] = _envelope(seg.stop - seg.start, attack=1, release=seg.stop - seg.start - 1, decay=0.0) * 0.15
            tr.open[seg] = 0.15
        return pos + closure + burst
    length = int(rng.uniform(50, 130) * ms)
    seg = _span(tr, pos, length)
    if seg is None:
        return pos + length
    env = _envelope(seg.stop - seg.start, attack=int(15 * ms), release=int(20 * ms), decay=0.0)
    if kind.startswith("fricative"):
        band = {"fricative_s": 0, "fricative_sh": 1, "fricative_f": 2}[kind]
        tr.noise[band, seg] = env * (0.045 if band == 2 else 0.07)
        tr.open[seg] = 0.05 if band == 2 else 0.12
        tr.width[seg] = {0: 0.8, 1: 0.15, 2: 0.5}[band]
    else:  # nasals and the glide are voiced with their own formants
        f1, f2, f3, amp, mouth, width = {
            "nasal_m": (250, 1000, 2200, 0.3, 0.0, 0.5),
            "nasal_n": (250, 1500, 2500, 0.3, 0.1, 0.6),
            "glide_w": (320, 700, 2200, 0.45, 0.18, 0.0),
        }[kind]
        tr.f1[seg], tr.f2[seg], tr.f3[seg] = f1, f2, f3
        tr.voice[seg] = env * amp
        tr.open[seg] = env * mouth
        tr.width[seg] = width
    return pos + length


def _span(tr: _Tracks, start: int, length: int) -> slice | None:
    n = tr.voice.shape[0]
    stop = min(start + length, n)
    return slice(start, stop) if stop - start > 1 else None


def _envelope(n: int, *, attack: int, release: int, decay: float) -> np.ndarray:
    """Raised-cosine attack and release around a gently decaying sustain, float32 (n,)."""
    env = np.linspace(1.0, 1.0 - decay, n, dtype=np.float32)
    a, r = max(1, min(attack, n // 2)), max(1, min(release, n // 2))
    env[:a] *= 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, a, dtype=np.float32))
    env[n - r :] *= 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, r, dtype=np.float32))
    return env


def _render(tr: _Tracks, rng: np.random.Generator, sp: Speaker, expressive: bool) -> Speech:
    n = tr.voice.shape[0]
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    smooth = int(0.02 * SAMPLE_RATE)
    formants = [uniform_filter1d(f, smooth * 2, mode="nearest") * sp.formant_scale for f in (tr.f1, tr.f2, tr.f3)]
    voice = uniform_filter1d(tr.voice, smooth // 2, mode="nearest")

    # Pitch: phrase declination (sawtooth over ~2.5 s phrases), accents, vibrato, slow drift.
    phrase = ((t + rng.uniform(0, 2.5)) % 2.5) / 2.5
    drift = uniform_filter1d(rng.normal(0, 1, n // BLOCK + 1), 20, mode="wrap").repeat(BLOCK)[:n]
    accent = uniform_filter1d(tr.accent, smooth * 2, mode="nearest")
    range_ = 1.6 if expressive else 1.0
    f0 = sp.f0 * (1 + range_ * (0.12 * (0.5 - phrase) + accent) + 0.012 * np.sin(2 * np.pi * 5.2 * t) + 0.05 * drift)
    phase = np.cumsum(f0 / SAMPLE_RATE) % 1.0
    oq = 0.6  # open quotient of the glottal pulse
    flow = np.where(phase < oq, 0.5 - 0.5 * np.cos(2 * np.pi * phase / oq), 0.0)
    source = np.diff(flow, prepend=0.0) * (SAMPLE_RATE / sp.f0) * 0.1
    source += sp.breath * rng.normal(0, 1, n) * (voice > 0.05)
    voiced = _formant_filter(source * voice, formants) * 0.9

    # Noise bands: s (4-7.5 kHz), sh (2-4 kHz), broad (1-7 kHz) for f and bursts.
    white = rng.normal(0, 1, (3, n))
    bands = [(4000, 7500), (2000, 4000), (1000, 7000)]
    noise = sum(sosfilt(butter(4, b, btype="band", fs=SAMPLE_RATE, output="sos"), white[i]) * tr.noise[i] for i, b in enumerate(bands))
    audio = voiced + noise + rng.normal(0, 1e-4, n)  # a faint room-noise floor
    audio = lfilter([1.0, -0.3], [1.0], audio)  # mild presence tilt
    peak = np.max(np.abs(audio)) + 1e-9
    audio = audio / peak * rng.uniform(0.55, 0.85)

    articulation_smooth = int(0.03 * SAMPLE_RATE)
    openness = uniform_filter1d(uniform_filter1d(tr.open, articulation_smooth), articulation_smooth)
    width = uniform_filter1d(uniform_filter1d(tr.width, articulation_smooth * 2), articulation_smooth)
    return Speech(
        audio=audio.astype(np.float32),
        openness=np.clip(openness, 0, 1).astype(np.float32),
        width=np.clip(width, 0, 1).astype(np.float32),
    )


def _formant_filter(x: np.ndarray, formants: list[np.ndarray]) -> np.ndarray:
    """Cascade of three unity-DC-gain resonators with per-block (5 ms) coefficients."""
    n = x.shape[0]
    starts = np.arange(0, n, BLOCK)
    mids = np.minimum(starts + BLOCK // 2, n - 1)
    bw = np.array([80.0, 110.0, 160.0])[:, None]  # (3, 1)
    f = np.stack([fk[mids] for fk in formants])  # (3, blocks)
    c = -np.exp(-2 * np.pi * bw / SAMPLE_RATE) * np.ones_like(f)
    b = 2 * np.exp(-np.pi * bw / SAMPLE_RATE) * np.cos(2 * np.pi * f / SAMPLE_RATE)
    sos = np.zeros((starts.shape[0], 3, 6))  # (blocks, sections, 6)
    sos[:, :, 0] = (1 - b - c).T
    sos[:, :, 3] = 1.0
    sos[:, :, 4] = -b.T
    sos[:, :, 5] = -c.T
    out = np.empty(n)
    zi = np.zeros((3, 2))
    for j, start in enumerate(starts):
        out[start : start + BLOCK], zi = sosfilt(sos[j], x[start : start + BLOCK], zi=zi)
    return out
