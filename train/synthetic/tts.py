"""World speech v2: real synthesised speech and the mouth it calls for (docs/design.md §6).

Three offline speech synthesisers from Debian packages, each reporting the phones it speaks
with their timings, which :mod:`train.synthetic.visemes` turns into the mouth's tracks:

* **espeak-ng** (``espeak-ng``): 34 voice variants over seven English accents and Spanish, German,
  French, Italian, Portuguese and Dutch; called through ``libespeak-ng`` with phoneme events (each
  phone's sample position, :mod:`train.synthetic.espeak_events`);
* **festival** (``festival``, ``festvox-kallpc16k``, ``festvox-kdlpc16k``, ``festvox-us-slt-hts``):
  two diphone voices and an HTS voice; phone end times from the utterance's Segment relation;
* **flite** (``flite``): kal, kal16, awb, rms and slt; phone end times from ``-psdur``.
  flite is the **held-out engine**: no training world uses it (:data:`TRAIN_ENGINES`); the
  generalisation test speaks through it.

A voice is an engine, a voice name, a language, a speaking-rate factor and a pitch factor. A clip
is a sequence of sentences (:mod:`train.synthetic.texts`) separated by pauses of 0.1-0.7 s and,
one gap in five, a silence of 1.5-4 s, peak-normalised like the formant synthesiser's speech.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
from scipy.io import wavfile
from scipy.signal import resample_poly

from train.synthetic import espeak_events
from train.synthetic.speech import SAMPLE_RATE, Speech
from train.synthetic.texts import OTHER_LANGUAGES, sentence
from train.synthetic.visemes import articulation_tracks

ENGINES = ("espeak", "festival", "flite")
TRAIN_ENGINES = ("espeak", "festival")
HELD_OUT_ENGINES = ("flite",)
PACKAGES = {"espeak": "espeak-ng", "festival": "festival", "flite": "flite"}
PHONESETS = {"espeak": "espeak", "festival": "arpabet", "flite": "arpabet"}  # the phone names each engine reports

ESPEAK_ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-us-nyc", "en-029")
ESPEAK_LANGUAGES = {"es": "es", "de": "de", "fr": "fr", "it": "it", "pt": "pt", "nl": "nl"}
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
                   "klatt3", "croak", "whisper", "Andy", "Annie", "Denis", "Gene", "Jacky", "Lee", "Mario",
                   "Michael", "Storm", "Tweaky", "adam", "anika", "belinda", "david", "linda", "max", "steph")
# voice -> (Debian package, default mean pitch in Hz for the pitch factor; None: the voice's own)
FESTIVAL_VOICES = {"kal_diphone": ("festvox-kallpc16k", 105.0), "ked_diphone": ("festvox-kdlpc16k", 105.0),
                   "cmu_us_slt_arctic_hts": ("festvox-us-slt-hts", None)}
FLITE_VOICES = {"kal": 100.0, "kal16": 100.0, "awb": 110.0, "rms": 100.0, "slt": 170.0}
P_OTHER_LANGUAGE = 0.2  # espeak voices speaking a language other than English


@dataclass(frozen=True)
class Voice:
    engine: str
    name: str
    language: str = "en"
    rate: float = 1.0  # speaking-rate factor (1.2: 20 % faster than the engine's default)
    pitch: float = 1.0  # mean-pitch factor (1: the voice's default)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Utterance:
    audio: np.ndarray  # float32 (S,) at SAMPLE_RATE
    phones: tuple[tuple[str, int, int], ...]  # (phone, start, stop) in samples at SAMPLE_RATE
    phoneset: str  # "espeak" or "arpabet"


def parse_engines(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Engines from ``"tts"`` (the training engines), one name or a comma-separated list."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    engines = tuple(dict.fromkeys(e for n in names for e in (TRAIN_ENGINES if n == "tts" else (n,))))
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        raise ValueError(f"unknown speech engines {unknown}; choose from {ENGINES} or 'tts' (= {TRAIN_ENGINES})")
    return engines


def check_engine(engine: str) -> None:
    """Raise a clear error when ``engine`` is not installed (naming the Debian package)."""
    ok = espeak_events.library() is not None if engine == "espeak" else shutil.which(engine) is not None
    if not ok:
        raise RuntimeError(f"speech engine {engine!r} is not installed: apt-get install {PACKAGES[engine]}")


def sample_voice(rng: np.random.Generator, engines: Sequence[str]) -> Voice:
    """A voice of one of ``engines``: name, language, rate 0.8-1.25, pitch 0.8-1.3."""
    engine = engines[int(rng.integers(len(engines)))]
    rate, pitch = float(rng.uniform(0.8, 1.25)), float(np.exp(rng.uniform(np.log(0.8), np.log(1.3))))
    if engine == "espeak":
        variant = ESPEAK_VARIANTS[int(rng.integers(len(ESPEAK_VARIANTS)))]
        if rng.random() < P_OTHER_LANGUAGE:
            language = sorted(ESPEAK_LANGUAGES)[int(rng.integers(len(ESPEAK_LANGUAGES)))]
            base = ESPEAK_LANGUAGES[language]
        else:
            language, base = "en", ESPEAK_ACCENTS[int(rng.integers(len(ESPEAK_ACCENTS)))]
        return Voice("espeak", f"{base}+{variant}", language, rate, pitch)
    names = sorted(FESTIVAL_VOICES if engine == "festival" else FLITE_VOICES)
    return Voice(engine, names[int(rng.integers(len(names)))], "en", rate, pitch)


def synthesize(texts: Sequence[str], voice: Voice) -> list[Utterance]:
    """Speak each text with ``voice``; one :class:`Utterance` per text."""
    check_engine(voice.engine)
    if voice.language != "en" and voice.engine != "espeak":
        raise ValueError(f"{voice.engine} speaks English only, got language {voice.language!r}")
    if voice.language not in ("en", *OTHER_LANGUAGES):
        raise ValueError(f"no texts for language {voice.language!r}")
    speak = {"espeak": _espeak, "festival": _festival, "flite": _flite}[voice.engine]
    return speak(texts, voice)


def tts_speech(*, rng: np.random.Generator, num_samples: int, voice: Voice, expressive: bool = False) -> Speech:
    """``num_samples`` of sentences and pauses spoken by ``voice``, with the mouth's tracks."""
    if expressive:  # slower, livelier speech
        voice = Voice(voice.engine, voice.name, voice.language, voice.rate * 0.85, voice.pitch * 1.1)
    audio = np.zeros(num_samples, np.float32)
    phones: list[tuple[str, int, int]] = []
    segments: list[tuple[int, int]] = []
    pos = int(rng.uniform(0.0, 0.5) * SAMPLE_RATE)
    while pos < num_samples:
        for utt in synthesize([sentence(rng, voice.language) for _ in range(3)], voice):
            end = min(num_samples, pos + len(utt.audio))
            audio[pos:end] = utt.audio[: end - pos]
            phones += [(p, pos + a, pos + b) for p, a, b in utt.phones]
            spoken = [(a, b) for p, a, b in utt.phones if not _is_pause(p)]
            if spoken:
                segments.append((pos + spoken[0][0], min(num_samples, pos + spoken[-1][1])))
            gap = rng.uniform(1.5, 4.0) if rng.random() < 0.2 else rng.uniform(0.1, 0.7)
            pos += len(utt.audio) + int(gap * SAMPLE_RATE)
            if pos >= num_samples:
                break
    openness, width = articulation_tracks(phones, num_samples, phoneset=PHONESETS[voice.engine], sample_rate=SAMPLE_RATE)
    peak = float(np.max(np.abs(audio))) + 1e-9
    audio = audio / peak * rng.uniform(0.55, 0.85) + rng.normal(0, 1e-4, num_samples)  # a faint noise floor
    return Speech(audio=audio.astype(np.float32), openness=openness, width=width,
                  segments=tuple(s for s in segments if s[0] < num_samples))


def _is_pause(phone: str) -> bool:
    return phone.startswith("_") or phone in ("pau", "h#", "sil", "brth", "ssil")


def _to_rate(audio: np.ndarray, rate: int) -> np.ndarray:
    g = gcd(rate, SAMPLE_RATE)
    out = audio if rate == SAMPLE_RATE else resample_poly(audio, SAMPLE_RATE // g, rate // g)
    return np.asarray(out, np.float32)


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    rate, data = wavfile.read(path)
    audio = data.astype(np.float32) / 32768.0 if data.dtype == np.int16 else data.astype(np.float32)
    return (audio.mean(axis=1) if audio.ndim == 2 else audio), int(rate)


def _utterance(audio: np.ndarray, rate: int, ends: list[tuple[str, float]], phoneset: str) -> Utterance:
    """An utterance from audio at ``rate`` and (phone, end time in seconds) pairs."""
    out = _to_rate(audio, rate)
    phones, start = [], 0
    for phone, end in ends:
        stop = min(len(out), round(end * SAMPLE_RATE))
        if stop > start:
            phones.append((phone, start, stop))
            start = stop
    return Utterance(out, tuple(phones), phoneset)


# --- espeak-ng, through its library in a child process ---------------------------------------------

def _espeak(texts: Sequence[str], voice: Voice) -> list[Utterance]:
    # a fresh process per call: espeak-ng carries state from one utterance to the next within a process, so
    # only a new process makes clip i the same clip whatever was spoken before it
    with tempfile.TemporaryDirectory() as tmp:
        job = {"voice": voice.name, "wpm": round(175 * voice.rate),
               "pitch": int(np.clip(50 + 60 * np.log2(voice.pitch), 0, 99)), "texts": list(texts), "out": tmp}
        script = Path(__file__).with_name("espeak_events.py")  # as a file: the package's imports cost 0.8 s
        run = subprocess.run([sys.executable, str(script)], input=json.dumps(job),
                             capture_output=True, text=True, timeout=300)
        if run.returncode != 0:
            raise RuntimeError(f"espeak-ng failed with voice {voice.name!r}: {run.stderr.strip()[-400:]}")
        out = []
        for i in range(len(texts)):
            audio, rate = _read_wav(Path(tmp) / f"{i}.wav")
            events = json.loads((Path(tmp) / f"{i}.json").read_text())
            ends = [(p, (events[k + 1][1] if k + 1 < len(events) else len(audio)) / rate)
                    for k, (p, _) in enumerate(events)]
            out.append(_utterance(audio, rate, ends, PHONESETS["espeak"]))
        return out


# --- festival and flite, as processes -------------------------------------------------------------

def _festival(texts: Sequence[str], voice: Voice) -> list[Utterance]:
    package, base_pitch = FESTIVAL_VOICES[voice.name]
    if not any(Path("/usr/share/festival/voices").glob(f"*/{voice.name}")):
        raise RuntimeError(f"festival voice {voice.name!r} is not installed: apt-get install {package}")
    with tempfile.TemporaryDirectory() as tmp:
        script = [f"(voice_{voice.name})", f"(Parameter.set 'Duration_Stretch {1.0 / voice.rate:.4f})"]
        if base_pitch is not None:
            script.append(f"(set! int_lr_params '((target_f0_mean {base_pitch * voice.pitch:.1f}) (target_f0_std "
                          f"{0.2 * base_pitch * voice.pitch:.1f}) (model_f0_mean 170) (model_f0_std 34)))")
        for i, text in enumerate(texts):
            clean = re.sub(r'["\\]', "", text)
            script += [f'(set! utt (utt.synth (Utterance Text "{clean}")))',
                       f'(utt.save.wave utt "{tmp}/{i}.wav" \'riff)', f'(utt.save.segs utt "{tmp}/{i}.segs")']
        run = subprocess.run(["festival", "--pipe"], input="\n".join(script) + "\n", capture_output=True, text=True,
                             timeout=300)
        out = []
        for i in range(len(texts)):
            wav = Path(tmp) / f"{i}.wav"
            if not wav.is_file():
                raise RuntimeError(f"festival wrote no audio for {texts[i]!r}: {run.stderr.strip()[-300:]}")
            audio, rate = _read_wav(wav)
            lines = (Path(tmp) / f"{i}.segs").read_text().split("#", 1)[1].split("\n")
            ends = [(f[2], float(f[0])) for f in (ln.split() for ln in lines) if len(f) == 3]
            out.append(_utterance(audio, rate, ends, PHONESETS[voice.engine]))
        return out


def _flite(texts: Sequence[str], voice: Voice) -> list[Utterance]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for text in texts:
            wav = Path(tmp) / "u.wav"
            run = subprocess.run(["flite", "-voice", voice.name, "--setf", f"duration_stretch={1.0 / voice.rate:.4f}",
                                  "--setf", f"int_f0_target_mean={FLITE_VOICES[voice.name] * voice.pitch:.1f}",
                                  "-psdur", "-t", text, "-o", str(wav)], capture_output=True, text=True, timeout=120)
            if run.returncode != 0 or not wav.is_file():
                raise RuntimeError(f"flite failed on {text!r} with voice {voice.name}: {run.stderr.strip()[-300:]}")
            audio, rate = _read_wav(wav)
            ends = [(tok.rsplit(":", 1)[0], float(tok.rsplit(":", 1)[1])) for tok in run.stdout.split() if ":" in tok]
            out.append(_utterance(audio, rate, ends, PHONESETS[voice.engine]))
    return out
