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
#: The shipped tiny checkpoint for each kind of model a sampler runs: (role, CFG-conditioned, rolling).
SHIPPED_CHECKPOINTS: dict[tuple[str, bool, bool], Path] = {
    ("student", True, False): DEFAULT_CHECKPOINT,
    ("student", True, True): ASSETS_DIR / "tiny-stream",
    ("student", False, False): ASSETS_DIR / "tiny-balanced",
    ("teacher", False, False): ASSETS_DIR / "tiny-teacher",
}
#: The small VAE trained by ``python -m train.vae`` (``train.teacher --vae``); also inside every checkpoint.
TINY_VAE = ASSETS_DIR / "tiny-vae"
#: The tiny decoder distilled from that VAE's decoder by ``python -m train.tiny_decoder`` (``--decoder tiny``).
TINY_DECODER = ASSETS_DIR / "tiny-decoder"
#: The example portrait and speech of the synthetic world, in the repository's fada_rt/examples/ folder.
EXAMPLES_DIR = ASSETS_DIR.parent / "examples"
EXAMPLE_IMAGE = EXAMPLES_DIR / "face.png"
EXAMPLE_AUDIO = EXAMPLES_DIR / "speech.wav"


def default_checkpoint(sampler: str = "fast") -> Path:
    """The shipped tiny checkpoint for ``sampler`` (fast: the CFG-distilled student; stream: the streaming
    student; balanced: the branch-wise student; teacher: the teacher), or a clear error while its weights are not
    shipped."""
    from fada_rt.sampling import SAMPLERS  # the sampler's spec says which model it needs

    if sampler not in SAMPLERS:
        raise ValueError(f"no shipped checkpoint for sampler {sampler!r}; choose one of {tuple(SAMPLERS)}")
    spec = SAMPLERS[sampler]
    folder = SHIPPED_CHECKPOINTS[(spec.role, spec.cfg_conditioned, spec.rolling)]
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"the default tiny checkpoint for sampler {sampler!r} is not shipped in this installation (expected "
            f"{folder}/config.json and model.safetensors); pass --checkpoint FOLDER with a trained checkpoint"
        )
    return folder


def example_image() -> Path:
    return _example(EXAMPLE_IMAGE, "--image")


def example_audio() -> Path:
    return _example(EXAMPLE_AUDIO, "--audio")


def _example(path: Path, flag: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"the example {path.name} is not part of this installation (looked for {path}); "
                                f"pass {flag} explicitly")
    return path
