"""The world's mouth rule for real speech: phones with timings -> mouth openness and width (§6).

World speech v2 takes its audio from speech synthesisers that report the phones they speak and
when (espeak-ng phoneme events, festival segments, flite ``-psdur``). Each phone gets a mouth
target (openness, width) in [0, 1]:

* vowels: the same rule as the formant synthesiser (:mod:`train.synthetic.speech`): openness from
  the vowel's F1 (280 Hz -> 0.3, 750 Hz -> 1), width from its F2 (rounded 850 Hz -> 0, spread
  2250 Hz -> 1); a diphthong glides from its first to its second vowel over its duration;
* consonants by place of articulation: lips shut for p/b/m, nearly shut for f/v, rounded for
  w, r and the post-alveolars (sh, ch, zh, j), spread for y; h keeps a half-open mouth;
* pauses and silence: closed, neutral width.

The targets are held over each phone's span, then smoothed as the formant synthesiser smooths
its tracks (30 ms twice for openness; 60 + 30 ms for width): the coarticulation of the world.
The rule reads only phones and times, never the waveform, so gain, noise, codecs or a
telephone line (training augmentation) cannot change what the mouth should do.

Phone names: ARPAbet as festival's and flite's US English voices report them (``aa``, ``hh``,
``pau``), and espeak-ng's mnemonics (``A:``, ``aI``, ``tS``, ``_:``) for every language it speaks:
stress and length marks are dropped and the name is matched by its longest known prefix. A phone
none of these name (rare espeak symbols of other languages) gets the :data:`OTHER` target: a
neutral, half-open mouth.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import uniform_filter1d

from train.synthetic.speech import VOWELS, vowel_openness, vowel_width

Target = tuple[float, float]  # (openness, width)

SILENCE: Target = (0.0, 0.5)
OTHER: Target = (0.25, 0.5)
CONSONANT_TARGETS: dict[str, Target] = {
    "bilabial": (0.0, 0.5),  # p b m
    "labiodental": (0.05, 0.5),  # f v
    "dental": (0.15, 0.6),  # th dh
    "alveolar": (0.12, 0.7),  # t d n s z
    "lateral": (0.2, 0.65),  # l
    "postalveolar": (0.12, 0.15),  # sh zh ch jh: protruded, rounded
    "velar": (0.2, 0.6),  # k g ng
    "rhotic": (0.15, 0.2),  # r
    "labial_glide": (0.1, 0.0),  # w
    "palatal_glide": (0.15, 0.8),  # y
    "glottal": (0.3, 0.5),  # h
}


def vowel_target(name: str) -> Target:
    """Mouth target of a vowel of :data:`train.synthetic.speech.VOWELS` (from its F1 and F2)."""
    f1, f2, _ = VOWELS[name]
    return vowel_openness(f1), vowel_width(f2)


# ARPAbet (festival's radio phone set, flite's cmu phone set): phone -> vowel(s) or consonant class.
ARPABET: dict[str, tuple[str, ...] | str] = {
    "aa": ("a",), "ae": ("ae",), "ah": ("V",), "ao": ("O",), "aw": ("a", "U"), "ax": ("@",), "axr": ("@",),
    "ay": ("a", "I"), "eh": ("E",), "er": ("@",), "ey": ("e", "I"), "ih": ("I",), "ix": ("I",), "iy": ("i",),
    "ow": ("o", "U"), "oy": ("O", "I"), "uh": ("U",), "uw": ("u",),
    "p": "bilabial", "b": "bilabial", "m": "bilabial", "em": "bilabial",
    "f": "labiodental", "v": "labiodental", "th": "dental", "dh": "dental",
    "t": "alveolar", "d": "alveolar", "n": "alveolar", "en": "alveolar", "s": "alveolar", "z": "alveolar",
    "dx": "alveolar", "l": "lateral", "el": "lateral",
    "sh": "postalveolar", "zh": "postalveolar", "ch": "postalveolar", "jh": "postalveolar",
    "k": "velar", "g": "velar", "ng": "velar", "r": "rhotic", "w": "labial_glide", "y": "palatal_glide",
    "hh": "glottal", "h": "glottal",
    "pau": "silence", "h#": "silence", "sil": "silence", "brth": "silence", "ssil": "silence",
}

# espeak-ng mnemonics, matched by longest prefix after the stress/length marks are dropped.
ESPEAK: dict[str, tuple[str, ...] | str] = {
    "aI": ("a", "I"), "aU": ("a", "U"), "eI": ("e", "I"), "oU": ("o", "U"), "@U": ("@", "U"), "OI": ("O", "I"),
    "e@": ("E", "@"), "i@": ("I", "@"), "U@": ("U", "@"), "A@": ("a",), "O@": ("O",), "@L": ("@",),
    "i": ("i",), "I": ("I",), "e": ("e",), "E": ("E",), "a": ("ae",), "A": ("a",), "0": ("O",), "O": ("O",),
    "o": ("o",), "U": ("U",), "u": ("u",), "V": ("V",), "@": ("@",), "3": ("@",), "y": ("i",), "Y": ("e",),
    "W": ("E",), "&": ("ae",),
    "tS": "postalveolar", "dZ": "postalveolar", "S": "postalveolar", "Z": "postalveolar",
    "p": "bilabial", "b": "bilabial", "m": "bilabial", "f": "labiodental", "v": "labiodental",
    "T": "dental", "D": "dental", "t": "alveolar", "d": "alveolar", "n": "alveolar", "s": "alveolar",
    "z": "alveolar", "l": "lateral", "L": "lateral", "r": "rhotic", "R": "rhotic", "k": "velar", "g": "velar",
    "N": "velar", "x": "velar", "Q": "velar", "c": "velar", "J": "palatal_glide", "j": "palatal_glide",
    "w": "labial_glide", "h": "glottal", "?": "glottal", "_": "silence",
}
_ESPEAK_MARKS = "'\",%=:;!#-^"


PHONESETS = ("arpabet", "espeak")


def phone_targets(phone: str, phoneset: str) -> tuple[Target, Target]:
    """Start and end mouth targets of one phone of ``phoneset`` (equal but for diphthongs)."""
    if phoneset not in PHONESETS:
        raise ValueError(f"phoneset must be one of {PHONESETS}, got {phoneset!r}")
    rule = ARPABET.get(phone.lower()) if phoneset == "arpabet" else _espeak_rule(phone)
    if rule is None:
        return OTHER, OTHER
    if rule == "silence":
        return SILENCE, SILENCE
    if isinstance(rule, str):
        return CONSONANT_TARGETS[rule], CONSONANT_TARGETS[rule]
    return vowel_target(rule[0]), vowel_target(rule[-1])


def _espeak_rule(phone: str) -> tuple[str, ...] | str | None:
    name = phone if phone.startswith("_") else phone.strip(_ESPEAK_MARKS)
    if name.startswith("_") or not name:
        return "silence"
    for n in range(min(len(name), 2), 0, -1):
        if name[:n] in ESPEAK:
            return ESPEAK[name[:n]]
    return None


def is_known_phone(phone: str, phoneset: str) -> bool:
    """Whether ``phone`` has a rule of its own (not the :data:`OTHER` target)."""
    if phoneset == "arpabet":
        return phone.lower() in ARPABET
    return _espeak_rule(phone) is not None


def articulation_tracks(phones: Sequence[tuple[str, int, int]], num_samples: int, *, phoneset: str,
                        sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample openness and width, float32 (S,), from ``(phone, start, stop)`` sample spans."""
    openness = np.zeros(num_samples, np.float32)
    width = np.full(num_samples, SILENCE[1], np.float32)
    for phone, start, stop in phones:
        a, b = max(0, int(start)), min(num_samples, int(stop))
        if b <= a:
            continue
        (o0, w0), (o1, w1) = phone_targets(phone, phoneset)
        ramp = np.linspace(0.0, 1.0, b - a, dtype=np.float32)
        openness[a:b] = o0 + (o1 - o0) * ramp
        width[a:b] = w0 + (w1 - w0) * ramp
    smooth = int(0.03 * sample_rate)
    openness = uniform_filter1d(uniform_filter1d(openness, smooth), smooth)
    width = uniform_filter1d(uniform_filter1d(width, smooth * 2), smooth)
    return np.clip(openness, 0, 1).astype(np.float32), np.clip(width, 0, 1).astype(np.float32)
