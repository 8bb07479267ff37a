"""The embedded default: the shipped tiny student and the example portrait and speech.

This is the one place that knows where they live. ``python -m fada_rt.generate --out demo.mp4``
(README's main command) runs :data:`DEFAULT_CHECKPOINT` on :data:`EXAMPLE_IMAGE` and
:data:`EXAMPLE_AUDIO` with the ``fast`` sampler, so it needs no download.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
#: The shipped tiny CFG-distilled ("fast") student: config.json + model.safetensors.
DEFAULT_CHECKPOINT = ASSETS_DIR / "tiny-fast"
#: The example portrait and speech of the synthetic world, in the repository's examples/ folder.
EXAMPLES_DIR = ASSETS_DIR.parent.parent / "examples"
EXAMPLE_IMAGE = EXAMPLES_DIR / "face.png"
EXAMPLE_AUDIO = EXAMPLES_DIR / "speech.wav"


def default_checkpoint() -> Path:
    """The shipped student's folder, or a clear error while its weights are not shipped."""
    if not (DEFAULT_CHECKPOINT / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"the default tiny student is not shipped in this version (expected {DEFAULT_CHECKPOINT}/config.json "
            f"and model.safetensors); pass --checkpoint FOLDER with a trained student checkpoint"
        )
    return DEFAULT_CHECKPOINT


def example_image() -> Path:
    return _example(EXAMPLE_IMAGE, "--image")


def example_audio() -> Path:
    return _example(EXAMPLE_AUDIO, "--audio")


def _example(path: Path, flag: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"the example {path.name} is not part of this installation (looked for {path}); "
                                f"pass {flag} explicitly")
    return path
