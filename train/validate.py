"""Periodic validation of a model being trained: held-out clips generated and scored.

Every ``validate_every`` steps the trainer hands its EMA model to a :class:`Validator`, which
generates the first ``num_clips`` clips of a held-out dataset (their portraits and audio) with the
given sampler, writes them as mp4 under ``RUN/val/step_XXXXXXX/`` for a person to watch, and
returns the synthetic-world metrics (sync, FID/FVD analogues, identity error, jitter).
"""

from __future__ import annotations

from pathlib import Path

from fada_rt.backends.torch_backend import TorchBackend
from fada_rt.clips import list_clips, read_clip
from fada_rt.metrics.generation import generate_clips
from fada_rt.metrics.suite import Extractors, evaluate_clips
from fada_rt.models.fada import FadaModel
from fada_rt.pipeline import AvatarPipeline

REPORTED = ("sync_abs_offset", "sync_confidence", "sync_distance", "fid", "fvd", "identity_error", "jitter")


class Validator:
    def __init__(self, *, data: str | Path, run_dir: str | Path, num_clips: int = 4, sampler: str = "teacher",
                 manifest: str = "A", max_frames: int = 75, seed: int = 0) -> None:
        self.refs = []
        for path in list_clips(data, manifest=manifest)[:num_clips]:
            clip = read_clip(path)
            self.refs.append(clip.frame_range(0, min(clip.num_frames, max_frames)))
        if not self.refs:
            raise ValueError(f"no held-out clips in {data} (manifest {manifest})")
        self.run_dir = Path(run_dir)
        self.sampler = sampler
        self.seed = seed
        self.extractors = Extractors.synthetic()

    def __call__(self, model: FadaModel, step: int) -> dict[str, float]:
        was_training = model.training
        backend = TorchBackend(model)
        pipeline = AvatarPipeline(backend, sampler=self.sampler)
        generated = generate_clips(pipeline, self.refs, seed=self.seed,
                                   video_dir=self.run_dir / "val" / f"step_{step:07d}")
        summary = evaluate_clips(generated.clips, self.refs, extractors=self.extractors, progress=False)["summary"]
        model.train(was_training)
        return {k: float(summary[k]) for k in REPORTED} | {"gen_seconds": generated.seconds}
