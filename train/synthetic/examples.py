"""Regenerate the demo inputs: python -m train.synthetic.examples [--out fada_rt/examples]

``face.png``: a 256x256 portrait of the world (neutral, mouth closed, eyes open);
``speech.wav``: 7 s (16 kHz mono) of a real synthesised voice, flite's ``slt`` reading a fixed text: the
held-out engine (train/synthetic/tts.py), so the demo speaks with a voice no shipped model heard in training.
Both are reproducible (a fixed seed; flite is deterministic); regenerating the speech needs flite installed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from fada_rt.assets import EXAMPLES_DIR
from fada_rt.clips import write_wav
from train.synthetic.dataset import clip_identity
from train.synthetic.motion import still_motion
from train.synthetic.render import render_frames
from train.synthetic.tts import Voice, synthesize

EXAMPLE_SEED = 2024
EXAMPLE_IDENTITY = 3  # one the face detector finds at every scale (score ~1.4; docs/portraits.md)
PORTRAIT_SIZE = 256
SPEECH_SECONDS = 7.0
SPEECH_START = 0.3  # seconds of silence before the voice
EXAMPLE_VOICE = Voice("flite", "slt")
EXAMPLE_TEXT = "Hello, and welcome to the show. Today we talk about maps, boats and the weather. See you soon!"


def make_examples(*, out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    identity, _ = clip_identity(seed=EXAMPLE_SEED, index=EXAMPLE_IDENTITY)
    face = render_frames(identity, still_motion(1), size=PORTRAIT_SIZE)[0]
    face_path = out / "face.png"
    Image.fromarray(face).save(face_path, optimize=False)
    (utterance,) = synthesize([EXAMPLE_TEXT], EXAMPLE_VOICE)
    audio = np.zeros(int(SPEECH_SECONDS * 16000), np.float32)
    start = int(SPEECH_START * 16000)
    if start + utterance.audio.size > audio.size:
        raise ValueError(f"the example text takes {utterance.audio.size / 16000:.2f} s; it must fit in "
                         f"{SPEECH_SECONDS - SPEECH_START:g} s")
    audio[start : start + utterance.audio.size] = utterance.audio
    wav_path = out / "speech.wav"
    write_wav(wav_path, audio / np.abs(audio).max() * 0.7)
    return face_path, wav_path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.synthetic.examples", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(EXAMPLES_DIR), help="folder for face.png and speech.wav (default: %(default)s)")
    a = p.parse_args(argv)
    for path in make_examples(out=a.out):
        print(path)


if __name__ == "__main__":
    main()
