"""Guidance scales and drift: one checkpoint and sampler at several (cfg_a, cfg_r), on held-out clips.

``python -m benchmarks.guidance_sweep --checkpoint runs/teacher-tiny/teacher --sampler teacher-6x3
--scales 6.5,2.5 2,1 --data data/heldout --clips 16``

Every scale pair generates the same clips with the same noise seeds (as :mod:`benchmarks.quality_table`)
and is scored on the whole clip and, for drift across chunks, on each clip's first and last
``--segment`` frames (the motion frames of later chunks are the pipeline's own earlier output).
Writes ``guidance_sweep.json`` under ``--out``: one row per scale pair, ``all`` / ``first`` / ``last``.
``--seed 0 1`` generates every clip with each seed and averages the metrics (``all_seeds``: each seed's).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.quality_table import load_refs
from fada_rt.backends.torch_backend import TorchBackend
from fada_rt.checkpoint import load_model
from fada_rt.clips import FPS, Clip
from fada_rt.pipeline import AvatarPipeline
from fada_rt.sampling import SAMPLERS

KEYS = ("sync_distance", "sync_confidence", "sync_abs_offset", "mouth_open_corr", "mouth_width_corr", "fid", "fvd",
        "identity_error", "jitter")


def segment(clips: list[Clip], part: str, frames: int) -> list[Clip]:
    """Each clip's first or last ``frames`` frames, with the matching audio."""
    short = [c.id for c in clips if c.num_frames < frames]
    if short:
        raise ValueError(f"clips {short} have fewer frames than asked for: fewer than --segment {frames}")
    return [c.frame_range(0, frames) if part == "first" else c.frame_range(c.num_frames - frames, c.num_frames)
            for c in clips]


def sweep(*, checkpoint: str | Path, sampler: str, scales: list[tuple[float, float]], refs: list[Clip],
          segment_frames: int, seed: int | Sequence[int] = 0) -> list[dict[str, Any]]:
    """One row per (cfg_a, cfg_r): the metrics on whole clips and on their first / last segments, averaged
    over the noise seeds (:func:`fada_rt.metrics.suite.mean_over_seeds`); ``all_seeds`` keeps the
    whole-clip metrics of each seed."""
    # the metrics (opencv, scipy: the [metrics] extra) are imported where they run: --help needs none
    from fada_rt.metrics.generation import generate_clips
    from fada_rt.metrics.suite import Extractors, evaluate_clips, mean_over_seeds, seed_list

    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {tuple(SAMPLERS)}")
    seeds = seed_list(seed)
    role = SAMPLERS[sampler].role
    model, _ = load_model(checkpoint, role=role)
    backend = TorchBackend(model, role=role)
    extractors = Extractors.synthetic()
    rows = []
    for cfg_a, cfg_r in scales:
        pipeline = AvatarPipeline(backend, sampler=sampler, cfg_audio=cfg_a, cfg_ref=cfg_r)
        per_part: dict[str, list[dict[str, Any]]] = {"all": [], "first": [], "last": []}
        for s in seeds:
            clips = generate_clips(pipeline, refs, seed=s).clips
            for part, summaries in per_part.items():
                pred, ref = (clips, refs) if part == "all" else (segment(clips, part, segment_frames),
                                                                 segment(refs, part, segment_frames))
                summaries.append(evaluate_clips(pred, ref, extractors=extractors, progress=False)["summary"])
        row: dict[str, Any] = {"checkpoint": str(checkpoint), "sampler": sampler, "cfg": [cfg_a, cfg_r],
                               "nfe": pipeline.nfe, "seeds": seeds}
        for part, summaries in per_part.items():
            row[part] = mean_over_seeds(summaries, KEYS)  # nan: no clip varied
        row["all_seeds"] = {k: [float(s.get(k, float("nan"))) for s in per_part["all"]] for k in KEYS}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def parse_scales(values: list[str]) -> list[tuple[float, float]]:
    out = []
    for v in values:
        parts = v.split(",")
        if len(parts) != 2:
            raise ValueError(f"--scales takes CFG_A,CFG_R pairs such as 6.5,2.5; got {v!r}")
        out.append((float(parts[0]), float(parts[1])))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Score one checkpoint at several guidance scales, with a drift breakdown.")
    p.add_argument("--checkpoint", required=True, help="teacher or student checkpoint folder")
    p.add_argument("--sampler", default="teacher-6x3", choices=tuple(SAMPLERS),
                   help="a guided sampler: teacher, teacher-6x3, balanced, fast (default: %(default)s)")
    p.add_argument("--scales", nargs="+", default=["6.5,2.5", "2,1"],
                   help="CFG_A,CFG_R pairs (Eq. 9; default: %(default)s)")
    p.add_argument("--data", required=True, help="held-out dataset (clip format)")
    p.add_argument("--manifest", default="A", help="held-out manifest (clean clips; default: %(default)s)")
    p.add_argument("--clips", type=int, default=16, help="held-out clips (default: %(default)s)")
    p.add_argument("--max-frames", type=int, default=75, help=f"frames per clip (default: %(default)s, {75 / FPS:g} s)")
    p.add_argument("--segment", type=int, default=32,
                   help="frames of the first / last segment (>= 25: the sync offset search; default: %(default)s)")
    p.add_argument("--seed", type=int, nargs="+", default=[0],
                   help="noise seed(s); several average every metric over the seeds (one seed's Sync-D moves ~0.02)")
    p.add_argument("--out", default="benchmarks/results", help="folder for guidance_sweep.json (default: %(default)s)")
    args = p.parse_args(argv)
    refs = load_refs(args.data, clips=args.clips, manifest=args.manifest, max_frames=args.max_frames)
    rows = sweep(checkpoint=args.checkpoint, sampler=args.sampler, scales=parse_scales(args.scales), refs=refs,
                 segment_frames=args.segment, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "guidance_sweep.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
