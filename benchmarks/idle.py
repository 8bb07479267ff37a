"""Idle for as long as a call lasts: the avatar fed silence for minutes must stay calm, closed-mouthed and
itself (docs/calls.md).

``python -m benchmarks.idle [--minutes 10] [--identities 300] [--threads 1] [--out benchmarks/results/idle]``

What :class:`fada_rt.api.StreamingAvatar` makes when nobody speaks is the model fed silence, chunk after
chunk with the motion latents carried. This runs exactly that through the offline chunk loop
(:func:`fada_rt.metrics.generation.generate_clip`, the same pipeline and session code) from the portraits of
unseen identities of the long-run world (:func:`train.synthetic.sequence.make_sequence`, seed 2), and scores
per 10 s window (:mod:`fada_rt.metrics.windows`): identity error against the portrait, the drift figure (the
window's mean frame against the first window's, outside the mouth), jitter, head sway and mouth openness
(the metrics' mouth estimator). Writes ``idle.json`` and ``idle.md`` (first and last minute, slopes per
minute) and the frames at 0 s, 60 s and the last second as PNG.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.long_run import LONG_SEED, save_snapshots
from fada_rt.metrics.generation import generate_clip
from fada_rt.metrics.mouth import MouthEstimator
from fada_rt.metrics.windows import sequence_windows, slope_per_minute
from fada_rt.pipeline import AvatarPipeline
from train.synthetic.sequence import make_sequence

RESULTS = Path("benchmarks/results/idle")
KEYS = ("identity_error", "drift", "jitter", "head_sway")


def idle_run(pipeline: AvatarPipeline, *, identity: int, minutes: float, window: int, seed: int = 0,
             estimator: MouthEstimator) -> tuple[np.ndarray, dict[str, Any]]:
    """Frames and per-window scores of one portrait fed ``minutes`` of silence."""
    seq = make_sequence(seed=LONG_SEED, index=identity, seconds=2.0, size=pipeline.resolution)
    portrait = seq.frames[0]
    audio = np.zeros(round(minutes * 60 * 16000), np.float32)
    frames = generate_clip(pipeline, portrait=portrait, audio=audio, seed=seed, progress=f"idle {seq.id}")
    windows = sequence_windows(frames, audio, portrait=portrait, estimator=estimator, window=window)
    openness = estimator.face_states(frames)["open"]
    rows = []
    for w in windows:
        row = {k: float(w[k]) for k in KEYS} | {"start": int(w["start"]), "stop": int(w["stop"])}
        row["mouth_open"] = float(np.mean(openness[w["start"] : w["stop"]]))
        rows.append(row)
    return frames, {"id": seq.id, "windows": rows,
                    "portrait_open": float(estimator.face_states(portrait[None])["open"][0])}


def summarise(runs: list[dict[str, Any]], *, fps: int, window: int) -> dict[str, Any]:
    keys = (*KEYS, "mouth_open")
    minute = 60 * fps
    out: dict[str, Any] = {}
    for part, select in (("first minute", lambda r: r["stop"] <= minute),
                         ("last minute", lambda r, end=runs[0]["windows"][-1]["stop"]: r["start"] >= end - minute)):
        out[part] = {k: float(np.mean([w[k] for run in runs for w in run["windows"] if select(w)])) for k in keys}
    starts = [w["start"] for w in runs[0]["windows"]]
    out["slope per minute"] = {k: float(np.mean([slope_per_minute([w[k] for w in run["windows"]], starts,
                                                                  window=window, fps=fps) for run in runs]))
                               for k in keys}
    out["portrait mouth_open"] = float(np.mean([run["portrait_open"] for run in runs]))
    return out


def to_markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    keys = (*KEYS, "mouth_open")
    lines = [f"## Idle: {result['minutes']:g} minutes of silence, {len(result['runs'])} unseen identities "
             f"({result['name']}, {result['threads']} thread(s))", "",
             "| | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for part in ("first minute", "last minute", "slope per minute"):
        lines.append(f"| {part} | " + " | ".join(f"{s[part][k]:.4f}" for k in keys) + " |")
    lines += ["", f"Mouth openness of the portraits themselves: {s['portrait mouth_open']:.4f}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description="Feed the avatar silence for minutes; score calm, mouth and drift.")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped tiny one)")
    p.add_argument("--sampler", default="fast", help="sampler (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=10.0, help="minutes of silence per identity (default: %(default)s)")
    p.add_argument("--identities", type=int, nargs="+", default=[300], help="long-run world identities (default: 300)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument("--out", default=str(RESULTS), help="results folder (default: %(default)s)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipeline = AvatarPipeline.from_checkpoint(args.checkpoint, sampler=args.sampler)
    fps = pipeline.config.audio.fps
    window = 10 * fps
    estimator = MouthEstimator.load()
    out = Path(args.out)
    runs = []
    for identity in args.identities:
        frames, run = idle_run(pipeline, identity=identity, minutes=args.minutes, window=window,
                               estimator=estimator)
        save_snapshots(frames, out / "frames", run["id"], fps=fps)
        runs.append(run)
    name = f"{Path(args.checkpoint).name if args.checkpoint else 'shipped'} {args.sampler}"
    result = {"name": name, "minutes": args.minutes, "threads": args.threads, "runs": runs,
              "summary": summarise(runs, fps=fps, window=window)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "idle.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "idle.md").write_text(to_markdown(result) + "\n")
    print(to_markdown(result))
    return result


if __name__ == "__main__":
    main()
