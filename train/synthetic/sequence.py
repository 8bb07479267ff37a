"""Long talking sequences of the synthetic world: turns of speech and silent stretches (docs/design.md §8).

A clip of the training world is 2–4 s of continuous talking. A call is minutes of it, with the
speaker falling silent for seconds between turns. :func:`make_sequence` builds such a sequence for
one identity: turns of speech ``U(TURN_SECONDS)`` long, each from the world's own synthesiser (with its
short pauses between words), separated by silences drawn from ``GAP_SECONDS`` (and from
``LONG_GAP_SECONDS`` with probability ``P_LONG_GAP``: several seconds). Head sway, roll, brows and blinks
run on through the silences, as in the world's clips; the mouth is closed there.

Labels add, per frame, whether it lies inside a silent stretch (``silent``: the frames whose samples
are all silent, less :data:`SILENCE_MARGIN` frames at each edge, where the smoothed articulation still
moves) and the list of turns in seconds. The same (seed, index, seconds, size) gives the same sequence.
"""

from __future__ import annotations

import numpy as np

from fada_rt.clips import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from train.synthetic.dataset import GENERATOR_VERSION, SyntheticClip, clip_identity, component_rng
from train.synthetic.motion import mouth_per_frame, sample_motion
from train.synthetic.render import render_frames
from train.synthetic.speech import synthesize_speech

TURN_SECONDS = (3.0, 12.0)
GAP_SECONDS = (0.8, 2.5)
LONG_GAP_SECONDS = (3.0, 6.0)
P_LONG_GAP = 0.3
SILENCE_MARGIN = 3  # frames at each edge of a silent stretch left out of ``silent``
NEUTRAL_WIDTH = 0.5  # the articulation tracks' resting width (speech.py's empty tracks)
_MIN_WORD_GAP = int(0.04 * SAMPLE_RATE)


def make_sequence(*, seed: int, index: int, seconds: float, size: int = 64,
                  long_gap: tuple[float, float] = LONG_GAP_SECONDS) -> SyntheticClip:
    """Sequence ``index`` of the world with ``seed``: ``seconds`` of turns and silences, uint8 frames
    ``(T, size, size, 3)``, 16 kHz audio ``(640 T,)`` and labels (``silent`` per frame, ``turns``).
    ``long_gap``: the range of the long silences (e.g. (20, 40) for a listener who is quiet for long)."""
    if seconds < 2.0:
        raise ValueError(f"a sequence needs at least 2 seconds, got {seconds}")
    frames_n = round(seconds * FPS)
    n = frames_n * SAMPLES_PER_FRAME
    identity, speaker = clip_identity(seed=seed, index=index)
    rng = component_rng(seed, index, "speech")
    audio = rng.normal(0.0, 1e-4, n).astype(np.float32)  # the faint room-noise floor of the speech
    openness = np.zeros(n, np.float32)
    width = np.full(n, NEUTRAL_WIDTH, np.float32)
    turns: list[tuple[float, float]] = []
    pos = int(rng.uniform(0.3, 1.0) * SAMPLE_RATE)
    while pos < n - SAMPLE_RATE:
        length = min(int(rng.uniform(*TURN_SECONDS) * SAMPLE_RATE), n - pos)
        speech = synthesize_speech(rng=rng, num_samples=length, speaker=speaker)
        end = _last_word_end(speech.openness)
        if end > 0:
            audio[pos : pos + end] = speech.audio[:end]
            openness[pos : pos + end] = speech.openness[:end]
            width[pos : pos + end] = speech.width[:end]
            turns.append((pos / SAMPLE_RATE, (pos + end) / SAMPLE_RATE))
        gap = long_gap if rng.random() < P_LONG_GAP else GAP_SECONDS
        pos += end + int(rng.uniform(*gap) * SAMPLE_RATE)
    motion = sample_motion(rng=component_rng(seed, index, "motion"), openness=mouth_per_frame(openness, frames_n),
                           width=mouth_per_frame(width, frames_n))
    frames = render_frames(identity, motion, size=size)
    silent = silent_frames(turns, frames_n)
    labels = {"id": f"seq{index:04d}", "kind": "sequence", "seed": seed, "index": index, "size": size,
              "seconds": frames_n / FPS, "generator_version": GENERATOR_VERSION, "identity": identity.to_dict(),
              "turns": [[round(a, 4), round(b, 4)] for a, b in turns], "silent": silent.tolist(),
              "frames": motion.to_lists()}
    return SyntheticClip(id=labels["id"], frames=frames, audio=audio, labels=labels)


def silent_frames(turns: list[tuple[float, float]], num_frames: int, *, margin: int = SILENCE_MARGIN) -> np.ndarray:
    """bool (T,): frames wholly outside every turn, ``margin`` frames away from each turn's edges."""
    talking = np.zeros(num_frames, bool)
    for start, stop in turns:
        a = max(0, int(np.floor(start * FPS)) - margin)
        b = min(num_frames, int(np.ceil(stop * FPS)) + margin)
        talking[a:b] = True
    return ~talking


def _last_word_end(openness: np.ndarray) -> int:
    """Sample index where the last complete word of a synthesised turn ends (the start of the last
    closed-mouth run of at least 40 ms), so a turn never stops mid-syllable; 0 if there is none."""
    closed = openness < 1e-3
    edges = np.flatnonzero(np.diff(closed.astype(np.int8)) == 1) + 1  # a closed run starts here
    for start in edges[::-1]:
        if closed[start : start + _MIN_WORD_GAP].all() and start + _MIN_WORD_GAP <= closed.shape[0]:
            return int(start)
    return 0
