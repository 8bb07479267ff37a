"""Regenerate the demo inputs: python -m train.synthetic.examples [--out fada_rt/examples]

``face.png``: a 256x256 portrait of the world (neutral, mouth closed, eyes open);
``speech.wav``: 7 s of the world's speech (16 kHz mono) in the same identity's voice.
Both come from fixed seeds, so the files are reproducible.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from fada_rt.assets import EXAMPLES_DIR
from fada_rt.clips import write_wav
from train.synthetic.dataset import clip_identity, component_rng
from train.synthetic.motion import still_motion
from train.synthetic.render import render_frames
from train.synthetic.speech import synthesize_speech

EXAMPLE_SEED = 2024
EXAMPLE_IDENTITY = 5
PORTRAIT_SIZE = 256
SPEECH_SECONDS = 7.0


def make_examples(*, out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    identity, speaker = clip_identity(seed=EXAMPLE_SEED, index=EXAMPLE_IDENTITY)
    face = render_frames(identity, still_motion(1), size=PORTRAIT_SIZE)[0]
    face_path = out / "face.png"
    Image.fromarray(face).save(face_path, optimize=False)
    speech = synthesize_speech(
        rng=component_rng(EXAMPLE_SEED, EXAMPLE_IDENTITY, "speech"),
        num_samples=int(SPEECH_SECONDS * 16000),
        speaker=speaker,
    )
    fade = np.minimum(1.0, np.minimum(np.arange(speech.audio.size), np.arange(speech.audio.size)[::-1]) / 800.0)
    wav_path = out / "speech.wav"
    write_wav(wav_path, speech.audio * fade.astype(np.float32))
    return face_path, wav_path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.synthetic.examples", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(EXAMPLES_DIR), help="folder for face.png and speech.wav (default: %(default)s)")
    a = p.parse_args(argv)
    for path in make_examples(out=a.out):
        print(path)


if __name__ == "__main__":
    main()
