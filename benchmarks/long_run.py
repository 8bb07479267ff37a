"""The long-run benchmark: does the avatar hold for minutes? (docs/design.md §8)

``python -m benchmarks.long_run [--checkpoint DIR] [--sampler fast] [--name NAME] [--sets 60s 10min]``

The sequences are the synthetic world's unseen identities (seed :data:`LONG_SEED`; the training world
is seed 0, the held-out clips seed 1), speaking in turns with silent stretches of up to several seconds
(:func:`train.synthetic.sequence.make_sequence`): eight of 60 s (set ``60s``), two of 10 minutes (set
``10min``) and two of 2 minutes with silences of 20–40 s (set ``quiet``: the mouth shut and the face calm
however long the silence). Each is generated from its portrait (frame 0) and audio, chunk after chunk with the motion
latents carried, exactly as ``fada_rt.generate`` runs, and scored per 10 s window
(:mod:`fada_rt.metrics.windows`): identity error, FID* (over the set's sequences together), Sync-D,
mouth follow, jitter and the drift figure, with each metric's least-squares slope per minute, the first
and last minute (10-minute set), and the mouth and face in silence. The ground truth is scored alike.

Writes ``long_run.json`` (every row; a run adds or replaces its own row, so rows for several checkpoints
and candidates accumulate beside each other), ``long_run.md``, ``long_run.png`` (each metric over time,
every row and the ground truth) and, for the 10-minute sequences, the frames at 0 s, 60 s and the last
second as PNG under ``long_run/<row>/`` (the ground truth's under ``long_run/ground_truth/``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.long_run_report import plot_rows, to_markdown
from fada_rt.metrics.features import FixedFrameFeatures
from fada_rt.metrics.frechet import frechet_distance_of
from fada_rt.metrics.generation import generate_clip
from fada_rt.metrics.mouth import MouthEstimator
from fada_rt.metrics.windows import WINDOW_KEYS, sequence_windows, silence_scores, slope_per_minute
from fada_rt.pipeline import AvatarPipeline
from train.synthetic.sequence import LONG_GAP_SECONDS, make_sequence

LONG_SEED = 2
RESULTS = Path("benchmarks/results")
SNAPSHOT_SECONDS = (0.0, 60.0)  # and the last second
FRAME_SCALE = 4  # saved frames are upscaled (nearest) so a person can see the pixels


@dataclass(frozen=True)
class SequenceSet:
    name: str
    seconds: float
    indices: tuple[int, ...]
    long_gap: tuple[float, float] = LONG_GAP_SECONDS  # range of the long silences between turns

    @property
    def long(self) -> bool:
        """Long enough for a first-minute / last-minute comparison (and its saved frames)."""
        return self.seconds >= 180.0


SETS: dict[str, SequenceSet] = {s.name: s for s in (
    SequenceSet("60s", 60.0, tuple(range(8))),
    SequenceSet("10min", 600.0, (100, 101)),
    SequenceSet("quiet", 120.0, (200, 201), long_gap=(20.0, 40.0)),  # long silences: calm, mouth shut
)}


@dataclass
class Scored:
    """One set's sequences for one row: per-sequence windows and silence, frame features for FID*."""

    windows: dict[str, list[dict[str, float]]]
    silence: dict[str, dict[str, Any]]
    features: dict[str, np.ndarray]  # (T, D) per sequence


class Scorer:
    def __init__(self, *, window: int, fps: int) -> None:
        self.window, self.fps = window, fps
        self.estimator = MouthEstimator.load()
        self.features = FixedFrameFeatures()

    def score(self, frames: np.ndarray, seq: Any) -> tuple[list[dict[str, float]], dict[str, Any], np.ndarray]:
        portrait = seq.frames[0]
        windows = sequence_windows(frames, seq.audio, portrait=portrait, estimator=self.estimator, window=self.window)
        silence = silence_scores(frames, np.asarray(seq.labels["silent"]), estimator=self.estimator)
        return windows, silence, self.features(frames)


def summarize(scored: Scored, reference: Scored | None, *, window: int, fps: int, long: bool) -> dict[str, Any]:
    """Per-window means over the set's sequences (FID* over their frames together, against ``reference``),
    slopes per minute, first / last (minute or window) and the silence means."""
    ids = sorted(scored.windows)
    count = min(len(scored.windows[i]) for i in ids)
    rows = []
    for w in range(count):
        a, b = scored.windows[ids[0]][w]["start"], scored.windows[ids[0]][w]["stop"]
        row: dict[str, Any] = {"start": a, "stop": b, "minutes": (a + b) / 2 / fps / 60.0}
        for key in WINDOW_KEYS:
            row[key] = _nanmean([scored.windows[i][w][key] for i in ids])
        row["fid"] = _fid(scored, reference, ids, a, b)
        rows.append(row)
    keys = (*WINDOW_KEYS, "fid")
    starts = [r["start"] for r in rows]
    out: dict[str, Any] = {"windows": rows, "sequences": ids,
                           "slope_per_minute": {k: slope_per_minute([r[k] for r in rows], starts, window=window,
                                                                    fps=fps) for k in keys}}
    if long:  # first and last minute (the acceptance of an endless avatar: the last minute like the first)
        minute = 60 * fps
        last_start = rows[-1]["stop"] - minute
        spans = {"first": (0, minute), "last": (last_start, rows[-1]["stop"])}
        for part, (a, b) in spans.items():
            sel = [r for r in rows if r["start"] >= a and r["stop"] <= b]
            out[part] = {k: _nanmean([r[k] for r in sel]) for k in WINDOW_KEYS} | {
                "fid": _fid(scored, reference, ids, a, b), "seconds": [a / fps, b / fps]}
    else:
        out["first"] = {k: rows[0][k] for k in keys} | {"seconds": [rows[0]["start"] / fps, rows[0]["stop"] / fps]}
        out["last"] = {k: rows[-1][k] for k in keys} | {"seconds": [rows[-1]["start"] / fps, rows[-1]["stop"] / fps]}
    out["drift_last_window"] = rows[-1]["drift"]
    out["silence"] = {k: _nanmean([scored.silence[i].get(k, np.nan) for i in ids])
                      for k in ("silence_open", "silence_open_p95", "silence_jitter")}
    out["silence"]["longest_silence_s"] = max(scored.silence[i].get("longest_silence_frames", 0) for i in ids) / fps
    return out


def _fid(scored: Scored, reference: Scored | None, ids: list[str], a: int, b: int) -> float:
    if reference is None:
        return 0.0
    pred = np.concatenate([scored.features[i][a:b] for i in ids])
    ref = np.concatenate([reference.features[i][a:b] for i in ids])
    return frechet_distance_of(pred, ref)


def _nanmean(values: list[float]) -> float:
    v = np.asarray(values, np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def run_set(sset: SequenceSet, *, pipeline: AvatarPipeline | None, scorer: Scorer, size: int, seed: int,
            frames_dir: Path | None, progress: bool = True) -> Scored:
    """Generate (``pipeline``; None scores the ground truth) and score every sequence of a set, rendered at
    ``size`` (the model's resolution)."""
    scored = Scored({}, {}, {})
    for index in sset.indices:
        seq = make_sequence(seed=LONG_SEED, index=index, seconds=sset.seconds, size=size, long_gap=sset.long_gap)
        if pipeline is None:
            frames = seq.frames
        else:
            frames = generate_clip(pipeline, portrait=seq.frames[0], audio=seq.audio, seed=seed + index,
                                   progress=f"{sset.name} {seq.id}" if progress else None)
        windows, silence, feats = scorer.score(frames, seq)
        scored.windows[seq.id], scored.silence[seq.id], scored.features[seq.id] = windows, silence, feats
        if frames_dir is not None and sset.long:
            save_snapshots(frames, frames_dir, seq.id, fps=scorer.fps)
    return scored


def save_snapshots(frames: np.ndarray, folder: Path, seq_id: str, *, fps: int) -> list[Path]:
    """Frames at 0 s, 60 s and the last second (its first frame), upscaled, as PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    last_second = (frames.shape[0] - 1) // fps
    paths = []
    for t in (*SNAPSHOT_SECONDS, float(last_second)):
        k = min(round(t * fps), frames.shape[0] - 1)
        img = frames[k].repeat(FRAME_SCALE, axis=0).repeat(FRAME_SCALE, axis=1)
        path = folder / f"{seq_id}_{int(t):04d}s.png"
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def load_results(path: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """The rows already in ``long_run.json`` when they were scored on the same sequences and windows."""
    if not path.is_file():
        return {"spec": spec, "ground_truth": {}, "rows": []}
    data = json.loads(path.read_text())
    if data.get("spec") != spec:
        raise ValueError(f"{path} was scored on other sequences or windows ({data.get('spec')}, now {spec}); "
                         f"move it away or pass another --out")
    return data


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Score a checkpoint/sampler on long synthetic sequences, window by window.")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped tiny one of --sampler)")
    p.add_argument("--sampler", default="fast", help="fast, balanced, teacher-6x3, ... (fada_rt.sampling.SAMPLERS)")
    p.add_argument("--cfg-audio", type=float, default=None, help="guidance scale cfg_a (default: the checkpoint's own)")
    p.add_argument("--cfg-ref", type=float, default=None, help="guidance scale cfg_r (default: the checkpoint's own)")
    p.add_argument("--motion-noise-step", type=int, default=None,
                   help="motion-frame noise step at run time (default: the checkpoint's RolloutConfig)")
    p.add_argument("--noise-sharing", type=float, default=None,
                   help="share of the start noise common to all frames (default: the checkpoint's RolloutConfig)")
    p.add_argument("--motion-anchor", type=float, default=None,
                   help="pull of the motion latents towards the portrait (default: the checkpoint's RolloutConfig)")
    p.add_argument("--reference-sink", choices=("on", "off"), default=None,
                   help="the portrait in the first motion slot (default: the checkpoint's RolloutConfig)")
    p.add_argument("--name", default=None, help="row name (default: checkpoint folder and sampler)")
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS), help="sequence sets to run")
    p.add_argument("--max-sequences", type=int, default=None,
                   help="only the first N sequences of each set (screening runs; keep their rows in another --out)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (sequence i uses seed + i)")
    p.add_argument("--window-seconds", type=float, default=10.0, help="window length")
    p.add_argument("--out", default=str(RESULTS), help="folder for long_run.{json,md,png} and long_run/")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--decoder", default="vae", metavar="vae|tiny|DIR",
                   help="latents to frames: the VAE's decoder or a tiny one (fada_rt.backends.LoadOptions.decoder)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipeline = AvatarPipeline.from_checkpoint(args.checkpoint, sampler=args.sampler, cfg_audio=args.cfg_audio,
                                              cfg_ref=args.cfg_ref, decoder=args.decoder)
    changes = {"motion_noise_step": args.motion_noise_step, "noise_sharing": args.noise_sharing,
               "motion_anchor": args.motion_anchor,
               "reference_sink": None if args.reference_sink is None else args.reference_sink == "on"}
    pipeline.rollout = dataclasses.replace(pipeline.rollout, **{k: v for k, v in changes.items() if v is not None})
    fps = pipeline.config.audio.fps
    window = round(args.window_seconds * fps)
    out = Path(args.out)
    sets = {name: dataclasses.replace(s, indices=s.indices[:args.max_sequences]) for name, s in SETS.items()}
    spec = {"seed": LONG_SEED, "window_frames": window, "fps": fps,
            "sets": {s.name: {"seconds": s.seconds, "indices": list(s.indices), "long_gap": list(s.long_gap)}
                     for s in sets.values()}}
    load_results(out / "long_run.json", spec)  # refuse a results file of other sequences before the work
    name = args.name or f"{Path(args.checkpoint).name if args.checkpoint else 'shipped'} {args.sampler}"
    scorer = Scorer(window=window, fps=fps)
    g = pipeline.sampler.guidance
    row: dict[str, Any] = {"name": name, "checkpoint": str(args.checkpoint or "shipped"), "sampler": args.sampler,
                           "nfe": pipeline.nfe, "cfg": None if g.mode == "conditional" else [float(g.cfg_a), float(g.cfg_r)],
                           "seed": args.seed, "rollout": dataclasses.asdict(pipeline.rollout), "sets": {}}
    slug = "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()
    truth_rows: dict[str, Any] = {}
    for set_name in args.sets:
        sset = sets[set_name]
        truth = run_set(sset, pipeline=None, scorer=scorer, size=pipeline.resolution, seed=args.seed,
                        frames_dir=out / "long_run" / "ground_truth")
        truth_rows[set_name] = summarize(truth, None, window=window, fps=fps, long=sset.long)
        scored = run_set(sset, pipeline=pipeline, scorer=scorer, size=pipeline.resolution, seed=args.seed,
                         frames_dir=out / "long_run" / slug)
        row["sets"][set_name] = summarize(scored, truth, window=window, fps=fps, long=sset.long)
        print(json.dumps({"row": name, "set": set_name, "first": row["sets"][set_name]["first"],
                          "last": row["sets"][set_name]["last"]}), flush=True)
    results = load_results(out / "long_run.json", spec)  # again: another run may have added rows meanwhile
    results["ground_truth"].update(truth_rows)
    old = next((r for r in results["rows"] if r["name"] == name), None)
    if old is not None:  # a run of some sets keeps the row's other sets
        row["sets"] = {**old["sets"], **row["sets"]}
    results["rows"] = [r for r in results["rows"] if r["name"] != name] + [row]
    out.mkdir(parents=True, exist_ok=True)
    (out / "long_run.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "long_run.md").write_text(to_markdown(results) + "\n")
    plot_rows(results, out / "long_run.png")
    print(to_markdown(results))


if __name__ == "__main__":
    main()
