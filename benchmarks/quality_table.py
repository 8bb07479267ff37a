"""The quality tables of the paper (Tables 2–4) on held-out synthetic clips.

``python -m benchmarks.quality_table --runs runs --data data/heldout --clips 24``

Every method generates the same held-out clips (portrait = the clip's reference frame, its audio)
with the same noise seeds, and is scored with the synthetic-world metrics against the ground truth:
NFE-D, sync distance / confidence / |offset| (LSE-D / LSE-C style), FID and FVD analogues, identity
error, temporal jitter and wall time. Methods:

* Table 2 — the teacher at 75 NFE (25 DDIM steps x 3 CFG branches), the teacher with few DDIM steps
  (6 x 3 = 18 NFE, 6 x 1 = 6 NFE: what distillation must beat), the untrained network (the floor,
  ``RUNS/untrained`` from ``train.teacher --steps 0``), basic PeRFlow on A.
* Table 3 — PeRFlow on B with fixed W (0, 0.2, 1.0), adaptive without thresholds (s = 0.5, 0.25),
  adaptive (s = 0.5, 0.25): balanced students, 18 NFE.
* Table 4 — multi-CFG distillation: none (the balanced student run conditionally, 6 NFE), the scales
  through the time embedding, a CFG layer without tokens, a CFG layer with tokens (fast, 6 NFE).
* Table 5 — the shipped checkpoints: the teacher fine-tuned with a motion-weighted loss for 2500 steps
  (``RUNS/teacher-mw1``, ``train.teacher --motion-weight 1``), the students distilled from it
  (``RUNS/distill-mw1/<variant>``), the shipped teacher: 5000 more such steps (``RUNS/teacher-mw-long``), and
  the balanced and fast students distilled from it (``RUNS/distill-mw-long/<variant>``); 2500 more steps
  with the training set's motion map (``RUNS/teacher-mw-dsmap``, ``--motion-map dataset``, shipped) and its
  students (``RUNS/distill-mw-dsmap/<variant>``); the hinge sync-loss A/B (``RUNS/teacher-mw-long-hinge``);
  the fast student that learnt its scale response (``RUNS/distill-cfg/fast``) and its A/B parts; the hinge
  on the dataset-map teacher (``RUNS/teacher-mw-dsmap-hinge``), 2500 more hinge steps up to t = 900
  (``RUNS/teacher-hinge-t900``, shipped) and its students (``RUNS/distill-t900/<variant>``, shipped).

Besides the paper's columns, ``open r`` / ``width r``: how closely the mouth's openness and width follow
what the audio calls for (per-clip correlation, :func:`fada_rt.metrics.suite.mouth_follow`).

The run folders are those of ``python -m train.teacher --run RUNS/teacher-tiny`` and
``python -m train.distill --run RUNS/distill/<variant>``. Writes ``quality_table.md`` and
``quality_table.json`` (a list of rows with ``method``, ``nfe``, ``sync_distance``, ``sync_confidence``,
``fid``, ``fvd``, ...), and ``quality_weights.json``: the adaptive weight by clip kind from the runs'
``samples.csv``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fada_rt.backends.torch_backend import TorchBackend, tiny_decoder_for
from fada_rt.checkpoint import load_model
from fada_rt.clips import FPS, list_clips, read_clip
from fada_rt.config import RolloutConfig
from fada_rt.pipeline import AvatarPipeline

if TYPE_CHECKING:  # the metrics (opencv, scipy: the [metrics] extra) are imported where they run: --help needs none
    from fada_rt.metrics.suite import Extractors


@dataclass(frozen=True)
class Method:
    table: str
    name: str
    run: str  # folder under RUNS holding the checkpoint folder
    checkpoint: str  # "teacher" or "student"
    sampler: str
    cfg_audio: float | None = None  # guidance scales (None: the checkpoint's default, else the paper's)
    cfg_ref: float | None = None
    rollout: RolloutConfig | None = None  # how chunks are chained (None: the checkpoint's own)
    lookahead: int | None = None  # frames of audio look-ahead a live run gets (None: the exact features)
    decoder: str = "vae"  # latents to frames: the VAE's decoder, or "tiny" (fada_rt.backends.LoadOptions.decoder)


METHODS: tuple[Method, ...] = (
    Method("2", "Teacher, DDIM 25 x 3 (A)", "teacher-tiny", "teacher", "teacher"),
    Method("2", "Teacher, DDIM 6 x 3", "teacher-tiny", "teacher", "teacher-6x3"),
    Method("2", "Teacher, DDIM 6 x 1 (cond.)", "teacher-tiny", "teacher", "teacher-6x1"),
    # the paper's scales (6.5 / 2.5) are too strong for the tiny teacher: a sweep found 2 / 1 best (README)
    Method("2", "Teacher, DDIM 6 x 3, CFG 2 / 1", "teacher-tiny", "teacher", "teacher-6x3", 2.0, 1.0),
    # the floor: the teacher's network before training (python -m train.teacher ... --steps 0)
    Method("2", "Untrained (random init), 6 x 1", "untrained", "teacher", "teacher-6x1"),
    Method("2", "PeRFlow, A", "distill/perflow-A", "student", "balanced"),
    Method("3", "Stu. B, Fixed-0", "distill/B-fixed-0", "student", "balanced"),
    Method("3", "+ Fixed-0.2", "distill/B-fixed-0.2", "student", "balanced"),
    Method("3", "+ Fixed-1.0", "distill/B-fixed-1.0", "student", "balanced"),
    Method("3", "+ Adaptive-unl.-0.5", "distill/B-unlimited-0.5", "student", "balanced"),
    Method("3", "+ Adaptive-unl.-0.25", "distill/B-unlimited-0.25", "student", "balanced"),
    Method("3", "+ Adaptive-0.5", "distill/B-adaptive-0.5", "student", "balanced"),
    Method("3", "+ Adaptive-0.25 (balanced)", "distill/balanced", "student", "balanced"),
    Method("4", "No CFG distillation (cond.)", "distill/balanced", "student", "balanced-conditional"),
    Method("4", "Balanced, CFG 2 / 1", "distill/balanced", "student", "balanced", 2.0, 1.0),
    Method("4", "CFG time embed", "distill/cfg-time-embed", "student", "fast"),
    Method("4", "CFG layer w/o tokens", "distill/cfg-layer-mlp", "student", "fast"),
    Method("4", "CFG layer + tokens (fast)", "distill/fast", "student", "fast"),
    # the shipped checkpoints default to 2 / 1 (ModelConfig.guidance_scales): the paper's scales are explicit
    Method("5", "MW teacher, DDIM 25 x 3", "teacher-mw1", "teacher", "teacher", 6.5, 2.5),
    Method("5", "MW teacher, DDIM 6 x 3", "teacher-mw1", "teacher", "teacher-6x3", 6.5, 2.5),
    Method("5", "MW teacher, DDIM 6 x 3, CFG 2 / 1", "teacher-mw1", "teacher", "teacher-6x3", 2.0, 1.0),
    Method("5", "MW balanced", "distill-mw1/balanced", "student", "balanced", 6.5, 2.5),
    Method("5", "MW balanced, CFG 2 / 1", "distill-mw1/balanced", "student", "balanced", 2.0, 1.0),
    Method("5", "MW fast", "distill-mw1/fast", "student", "fast", 6.5, 2.0),
    Method("5", "MW fast, CFG 2 / 1", "distill-mw1/fast", "student", "fast", 2.0, 1.0),
    # the shipped teacher: 5000 more steps of the same (RUNS/teacher-mw-long, README "Training")
    Method("5", "MW teacher 7500 steps, DDIM 6 x 3", "teacher-mw-long", "teacher", "teacher-6x3", 6.5, 2.5),
    Method("5", "MW teacher 7500 steps, DDIM 6 x 3, CFG 2 / 1", "teacher-mw-long", "teacher", "teacher-6x3", 2.0, 1.0),
    Method("5", "MW-7500 balanced, CFG 2 / 1", "distill-mw-long/balanced", "student", "balanced", 2.0, 1.0),
    Method("5", "MW-7500 fast, CFG 2 / 1", "distill-mw-long/fast", "student", "fast", 2.0, 1.0),
    # 2500 more steps with the training set's motion map (--motion-map dataset): the shipped teacher and
    # students (RUNS/teacher-mw-dsmap, RUNS/distill-mw-dsmap/<variant>); the sync expert's hinge target A/B
    Method("5", "MW-10000 dataset map, DDIM 6 x 3, CFG 2 / 1", "teacher-mw-dsmap", "teacher", "teacher-6x3", 2.0, 1.0),
    Method("5", "MW-10000 hinge sync, DDIM 6 x 3, CFG 2 / 1", "teacher-mw-long-hinge", "teacher", "teacher-6x3",
           2.0, 1.0),
    Method("5", "dataset-map balanced, CFG 2 / 1", "distill-mw-dsmap/balanced", "student", "balanced", 2.0, 1.0),
    Method("5", "dataset-map fast, CFG 2 / 1", "distill-mw-dsmap/fast", "student", "fast", 2.0, 1.0),
    # the fast student's scale response learnt (RUNS/distill-cfg/<name>; shipped: "fast"): unit-scale tokens,
    # scales drawn from 1-4 x 1-2 instead of 1-8 x 1-3.5, the CFG conditioning at 10x the learning rate
    Method("5", "CFG-learning fast, CFG 2 / 1", "distill-cfg/fast", "student", "fast", 2.0, 1.0),
    Method("5", "CFG-learning fast, CFG 1 / 1", "distill-cfg/fast", "student", "fast", 1.0, 1.0),
    Method("5", "CFG-learning fast 600 steps, CFG 2 / 1", "distill-cfg/fast-600", "student", "fast", 2.0, 1.0),
    Method("5", "unit tokens + narrow scales (CFG lr x1), CFG 2 / 1", "distill-cfg/narrow-lr1", "student", "fast",
           2.0, 1.0),
    Method("5", "unit tokens only, CFG 2 / 1", "distill-cfg/tokens-only", "student", "fast", 2.0, 1.0),
    Method("5", "unit tokens + CFG lr x10, CFG 2 / 1", "distill-cfg/tokens-lr10", "student", "fast", 2.0, 1.0),
    # the sync expert's hinge on the dataset-map teacher (RUNS/teacher-mw-dsmap-hinge), then 2500 more steps of
    # it on x0 predictions up to t = 900 (RUNS/teacher-hinge-t900) and its students (shipped before), at the
    # lower guidance the hinge-trained teachers want; scored with --seed 0 1
    Method("5", "MW-10000 dataset map, DDIM 6 x 3, CFG 1.5 / 1", "teacher-mw-dsmap", "teacher", "teacher-6x3",
           1.5, 1.0),
    Method("5", "dataset map + hinge sync, DDIM 6 x 3, CFG 1.5 / 1", "teacher-mw-dsmap-hinge", "teacher",
           "teacher-6x3", 1.5, 1.0),
    Method("5", "+ hinge sync to t = 900, DDIM 6 x 3, CFG 1.5 / 1", "teacher-hinge-t900", "teacher", "teacher-6x3",
           1.5, 1.0),
    Method("5", "hinge-t900 balanced, CFG 1.5 / 1", "distill-t900/balanced", "student", "balanced", 1.5, 1.0),
    Method("5", "hinge-t900 fast, CFG 1.5 / 1", "distill-t900/fast", "student", "fast", 1.5, 1.0),
    # 6 minutes more of the t900 teacher's own objective on an H200 (bf16, scripts/gpu_check.sh), two settings
    # side by side (RUNS/teacher-gpu-r1, -r2: 1408 steps of batch 64 at lr 1.5e-4, 1273 of batch 128 at 3e-4;
    # r2 shipped) and the students of r2 (shipped); scored with --seed 0 1
    Method("5", "+ 6 GPU min, batch 64, DDIM 6 x 3, CFG 1.5 / 1", "teacher-gpu-r1", "teacher", "teacher-6x3",
           1.5, 1.0),
    Method("5", "+ 6 GPU min, batch 128, lr 3e-4, DDIM 6 x 3, CFG 1.5 / 1", "teacher-gpu-r2", "teacher",
           "teacher-6x3", 1.5, 1.0),
    Method("5", "GPU-teacher balanced, CFG 1.5 / 1", "distill-gpu/balanced", "student", "balanced", 1.5, 1.0),
    Method("5", "GPU-teacher fast, CFG 1.5 / 1", "distill-gpu/fast", "student", "fast", 1.5, 1.0),
    # the endless avatar (docs/experiments/2026-12-04-endless-avatar.md): the fast student above re-anchored
    # (no training), the teacher trained 2500 steps more with the mixed noise prior (RUNS/teacher-ns95) and its
    # students (RUNS/distill-ns/<variant>), each at its checkpoint's rollout (shared noise, motion anchor 0.5)
    Method("6", "GPU-teacher fast, re-anchored (motion anchor 0.5)", "distill-gpu/fast", "student", "fast",
           rollout=RolloutConfig(motion_anchor=0.5)),
    Method("6", "endless teacher, DDIM 6 x 3", "teacher-ns95", "teacher", "teacher-6x3"),
    Method("6", "endless balanced", "distill-ns/balanced", "student", "balanced"),
    Method("6", "endless fast (the default)", "distill-ns/fast", "student", "fast"),
    # real voices (docs/experiments/2026-12-05-real-voices.md): the endless teacher trained 2000 steps more on the
    # first world merged with world speech v2 (espeak-ng, festival), half its chunks' audio augmented
    # (RUNS/teacher-voices), and its students (RUNS/distill-voices/<variant>); shipped
    Method("7", "real-voice teacher, DDIM 6 x 3", "teacher-voices", "teacher", "teacher-6x3"),
    Method("7", "real-voice balanced", "distill-voices/balanced", "student", "balanced"),
    Method("7", "real-voice fast (the default)", "distill-voices/fast", "student", "fast"),
    # the rolling sampler (docs/design.md §8): frames in flight at their own noise levels, 4 steps (one per PeRFlow
    # window), on the real-voice fast student as it is and on the streaming student tuned from it for per-frame
    # levels (RUNS/distill-voices/stream, train.distill --variant stream --init-student; shipped as tiny-stream)
    Method("8", "real-voice fast, rolling 4 x 1 (untuned)", "distill-voices/fast", "student", "stream"),
    Method("8", "streaming student, rolling 4 x 1 (stream)", "distill-voices/stream", "student", "stream"),
    # what the audio look-ahead buys (issue 26): the features a live run gets when a frame waits for 1 or 0 frames of
    # audio after its own instead of the window's 2 (fada_rt.streaming.streamed_windows)
    Method("8", "streaming student, look-ahead 1 frame", "distill-voices/stream", "student", "stream", lookahead=1),
    Method("8", "streaming student, look-ahead 0 frames", "distill-voices/stream", "student", "stream", lookahead=0),
    # the tiny decoder (TAESD's shape, distilled from the VAE's decoder by train.tiny_decoder; shipped as tiny-decoder)
    # in place of the VAE's, on the fast and streaming students
    Method("9", "real-voice fast, tiny decoder", "distill-voices/fast", "student", "fast", decoder="tiny"),
    Method("9", "streaming student, tiny decoder", "distill-voices/stream", "student", "stream", decoder="tiny"),
)
TABLE_TITLES = {
    "2": "Table 2 — basic distillation (no mixed supervision, no CFG distillation)",
    "3": "Table 3 — adaptive mixed-supervised distillation (PeRFlow on B, 3 CFG branches)",
    "4": "Table 4 — multi-CFG distillation (PeRFlow + adaptive-0.25 on B)",
    "5": "Shipped before — motion-weighted teachers (MW, --motion-weight 1; 2500, 7500 and 10000 steps, the last "
         "with the training set's motion map), the lip-sync expert's hinge on top and that teacher trained 6 "
         "minutes more on a GPU (batch 128, with its balanced and fast students: shipped until the endless avatar)",
    "6": "Shipped before — the endless avatar: motion frames re-anchored to the portrait, the session's noise "
         "shared by all frames (the teacher trained for it, its students distilled with it); see long_run.md",
    "7": "Shipped — real voices: the endless models trained on both worlds (the formant synthesiser's and world "
         "speech v2's espeak-ng and festival voices) with augmented audio; real_voices.md scores held-out flite",
    "8": "Shipped — streaming: the rolling sampler (frames in flight, a noise level each, 4 NFE per frame) against "
         "the chunked fast student of table 7",
    "9": "The tiny decoder in place of the VAE's: its cost against the rows of tables 7 and 8",
}
COLUMNS = (("nfe", "NFE-D", "{:d}"), ("sync_distance", "Sync-D ↓", "{:.4f}"), ("sync_confidence", "Sync-C ↑", "{:.4f}"),
           ("sync_abs_offset", "|off| ↓", "{:.2f}"), ("fid", "FID* ↓", "{:.2f}"), ("fvd", "FVD* ↓", "{:.2f}"),
           ("identity_error", "ID err ↓", "{:.4f}"), ("jitter", "jitter ↓", "{:.3f}"),
           ("mouth_open_corr", "open r ↑", "{:.3f}"), ("mouth_width_corr", "width r ↑", "{:.3f}"),
           ("seconds_per_frame", "s/frame", "{:.4f}"))
MOUTH_KEYS = ("mouth_open_corr", "mouth_width_corr")
METRIC_KEYS = ("sync_distance", "sync_confidence", "sync_abs_offset", "sync_in_sync", "fid", "fvd", "identity_error",
               "jitter")


def load_refs(data: str | Path, *, clips: int, manifest: str, max_frames: int) -> list:
    refs = []
    for path in list_clips(data, manifest=manifest)[:clips]:
        clip = read_clip(path)
        refs.append(clip.frame_range(0, min(clip.num_frames, max_frames)))
    if len(refs) < 2:
        raise ValueError(f"need at least 2 held-out clips in {data} (manifest {manifest}), found {len(refs)}")
    return refs


def evaluate_method(method: Method, *, runs: Path, refs: list, extractors: Extractors, seed: int | Sequence[int],
                    video_dir: Path | None) -> dict[str, Any]:
    """One table row: the method's clips generated with each noise seed, the metrics averaged over the seeds
    (:func:`fada_rt.metrics.suite.mean_over_seeds`); the per-seed Sync-D / Sync-C are kept as
    ``sync_distance_seeds`` / ``sync_confidence_seeds``. Videos are written for the first seed."""
    from fada_rt.metrics.generation import generate_clips
    from fada_rt.metrics.suite import evaluate_clips, mean_over_seeds, seed_list

    seeds = seed_list(seed)
    folder = runs / method.run / method.checkpoint
    model, meta = load_model(folder, role=method.checkpoint)
    backend = TorchBackend(model, role=method.checkpoint, decoder=tiny_decoder_for(method.decoder, model.config))
    pipeline = AvatarPipeline(backend, sampler=method.sampler,
                              cfg_audio=method.cfg_audio, cfg_ref=method.cfg_ref, rollout=method.rollout)
    summaries, seconds, frames = [], 0.0, 0
    for i, s in enumerate(seeds):
        videos = None if video_dir is None or i else video_dir / _slug(method.name)
        generated = generate_clips(pipeline, refs, seed=s, video_dir=videos, lookahead=method.lookahead)
        summaries.append(evaluate_clips(generated.clips, refs, extractors=extractors, progress=False)["summary"])
        seconds, frames = seconds + generated.seconds, frames + generated.frames
    g = pipeline.sampler.guidance
    return {"table": method.table, "method": method.name, "nfe": pipeline.nfe, "sampler": method.sampler,
            "cfg": None if g.mode == "conditional" else [float(g.cfg_a), float(g.cfg_r)],
            "checkpoint": str(folder), "train_step": meta["info"].get("step"), "seeds": seeds,
            "rollout": dataclasses.asdict(pipeline.rollout), "lookahead": method.lookahead, "decoder": method.decoder,
            **mean_over_seeds(summaries, METRIC_KEYS + MOUTH_KEYS),
            **{f"{k}_seeds": [float(s[k]) for s in summaries] for k in ("sync_distance", "sync_confidence")},
            "seconds_per_frame": seconds / frames, "clips": len(refs)}


def merge_rows(parts: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One table from partial runs on the same clips: the ground truth row once, then the methods in
    :data:`METHODS` order (a later part's row replaces an earlier one of the same method)."""
    by_name: dict[str, dict[str, Any]] = {}
    clips = {int(r["clips"]) for part in parts for r in part if "clips" in r}
    if len(clips) > 1:
        raise ValueError(f"the parts were scored on different numbers of clips {sorted(clips)}; rerun them alike")
    for part in parts:
        for row in part:
            by_name[row["method"]] = row
    order = ["Ground truth"] + [m.name for m in METHODS]
    unknown = sorted(set(by_name) - set(order))
    if unknown:
        raise ValueError(f"rows of unknown methods {unknown} (not in METHODS)")
    return [by_name[name] for name in order if name in by_name]


def ground_truth_row(refs: list, extractors: Extractors) -> dict[str, Any]:
    """What the held-out ground truth scores on the per-clip metrics (FID/FVD against itself are 0)."""
    from fada_rt.metrics.suite import evaluate_clips

    s = evaluate_clips(refs, refs, extractors=extractors, progress=False)["summary"]
    return {"table": "gt", "method": "Ground truth", "nfe": 0, "sync_distance": s["ref_sync_distance"],
            "sync_confidence": s["ref_sync_confidence"], "sync_abs_offset": 0.0, "fid": 0.0, "fvd": 0.0,
            "identity_error": s["ref_identity_error"], "jitter": s["ref_jitter"], "seconds_per_frame": float("nan"),
            **{k: float(s.get(f"ref_{k}", math.nan)) for k in MOUTH_KEYS},
            "clips": len(refs)}


def weight_by_kind(runs: Path) -> list[dict[str, Any]]:
    """Share of samples with W = 0 and mean R / W per clip kind, from each run's samples.csv."""
    out = []
    for method in METHODS:
        path = runs / method.run / "samples.csv"
        if method.checkpoint != "student" or not path.is_file() or any(r["run"] == method.run for r in out):
            continue
        rows = [r for r in csv.DictReader(path.open()) if r["ratio"] not in ("nan", "")]
        for kind in sorted({r["kind"] for r in rows}):
            sel = [r for r in rows if r["kind"] == kind]
            w = [float(r["weight"]) for r in sel]
            ratio = [float(r["ratio"]) for r in sel]
            out.append({"run": method.run, "kind": kind or "unlabelled", "samples": len(sel),
                        "weight_zero_share": sum(x == 0 for x in w) / len(w), "weight_mean": sum(w) / len(w),
                        "ratio_median": sorted(ratio)[len(ratio) // 2]})
    return out


def merge_weights(parts: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The by-kind weight rows of several tables (their ``quality_weights.json``, and last the rows computed
    from the runs at hand): a later part's rows replace all of an earlier part's rows of the same run, so
    merging on a machine that holds only some of the runs keeps the others' rows. In :data:`METHODS` order."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for part in parts:
        fresh: dict[str, list[dict[str, Any]]] = {}
        for row in part:
            fresh.setdefault(row["run"], []).append(row)
        by_run.update(fresh)
    order = list(dict.fromkeys(m.run for m in METHODS))
    unknown = sorted(set(by_run) - set(order))
    if unknown:
        raise ValueError(f"weight rows of unknown runs {unknown} (not in METHODS)")
    return [row for run in order for row in by_run.get(run, [])]


def to_markdown(rows: list[dict[str, Any]], kinds: list[dict[str, Any]], *, header: str) -> str:
    lines = [header, ""]
    gt = [r for r in rows if r["table"] == "gt"]
    for table, title in TABLE_TITLES.items():
        sel = [r for r in rows if r["table"] == table]
        if not sel:
            continue
        lines += [f"### {title}", "", "| Method | " + " | ".join(c[1] for c in COLUMNS) + " |",
                  "|---|" + "---:|" * len(COLUMNS)]
        for r in gt + sel:
            cells = [format_cell(r.get(key), fmt) + _spread(r.get(f"{key}_seeds")) for key, _, fmt in COLUMNS]
            lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
        lines.append("")
    if kinds:
        lines += ["### Adaptive weight by clip kind (training samples; labels used for analysis only)", "",
                  "| run | kind | samples | share W = 0 | mean W | median R |", "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {k['run']} | {k['kind']} | {k['samples']} | {k['weight_zero_share']:.2f} | "
                  f"{k['weight_mean']:.3f} | {k['ratio_median']:.1f} |" for k in kinds]
        lines.append("")
    return "\n".join(lines)


def format_cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return fmt.format(int(value)) if fmt == "{:d}" else fmt.format(value)


def _spread(values: list[float] | None) -> str:
    """`` ±h`` (half the range over seeds) after a cell averaged over several seeds, else nothing."""
    if values is None or len(values) < 2:
        return ""
    return f" ±{(max(values) - min(values)) / 2:.4f}"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Run the teacher and every distillation variant on held-out clips.")
    p.add_argument("--runs", required=True, help="folder holding teacher-tiny/ and distill/<variant>/ runs")
    p.add_argument("--data", required=True, help="held-out dataset (clip format)")
    p.add_argument("--manifest", default="A", help="held-out manifest (clean clips; default: %(default)s)")
    p.add_argument("--clips", type=int, default=24, help="held-out clips per method (default: %(default)s)")
    p.add_argument("--max-frames", type=int, default=75, help=f"frames per clip (default: %(default)s, {75 / FPS:g} s)")
    p.add_argument("--seed", type=int, nargs="+", default=[0],
                   help="noise seed(s), the same for every method; several average the metrics over the seeds "
                        "(Sync-D / Sync-C cells then show ± half their range): one seed's Sync-D moves ~0.02")
    p.add_argument("--only", nargs="*", default=None, help="evaluate only these method names")
    p.add_argument("--videos", default=None, help="also write every generated clip as mp4 under this folder")
    p.add_argument("--out", default="benchmarks/results", help="folder for quality_table.md / .json "
                   "(default: %(default)s)")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="instead of evaluating, combine the rows of earlier (partial, e.g. --only) runs' "
                        "quality_table.json files into one table (a later file's row replaces an earlier one; the "
                        "quality_weights.json beside each is merged likewise, then the runs under --runs)")
    args = p.parse_args(argv)
    runs, out = Path(args.runs), Path(args.out)
    if args.only is not None:
        unknown = sorted(set(args.only) - {m.name for m in METHODS})
        if unknown:
            raise ValueError(f"unknown method names {unknown}; choose from {[m.name for m in METHODS]}")
    if args.merge is not None:
        rows = merge_rows([json.loads(Path(f).read_text()) for f in args.merge])
    else:
        from fada_rt.metrics.suite import Extractors

        refs = load_refs(args.data, clips=args.clips, manifest=args.manifest, max_frames=args.max_frames)
        extractors = Extractors.synthetic()
        methods = [m for m in METHODS if args.only is None or m.name in args.only]
        missing = [str(runs / m.run / m.checkpoint) for m in methods if not (runs / m.run / m.checkpoint).is_dir()]
        if missing:
            raise FileNotFoundError("missing checkpoints (train them first, see README): " + ", ".join(missing))
        rows = [ground_truth_row(refs, extractors)]
        for method in methods:
            print(f"evaluating {method.name} ({method.sampler})", flush=True)
            rows.append(evaluate_method(method, runs=runs, refs=refs, extractors=extractors, seed=args.seed,
                                        video_dir=Path(args.videos) if args.videos else None))
    kinds = weight_by_kind(runs)
    if args.merge is not None:  # the weight rows saved beside each merged table, then those of the runs here
        saved = [Path(f).with_name("quality_weights.json") for f in args.merge]
        kinds = merge_weights([json.loads(w.read_text()) for w in saved if w.is_file()] + [kinds])
    n_clips = max(int(r.get("clips", 0)) for r in rows) if rows else 0
    header = (f"## Quality on {n_clips} held-out synthetic clips ({args.max_frames} frames each, unseen identities)"
              f"\n\nFID*/FVD* are the synthetic world's analogues (fixed feature spaces, fada_rt/metrics). One noise "
              f"seed per row unless its Sync-D shows ±: then the mean over seeds, ± half their range (one seed's "
              f"Sync-D moves by up to ~0.02 with the seed).")
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality_table.md").write_text(to_markdown(rows, kinds, header=header) + "\n")
    (out / "quality_table.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "quality_weights.json").write_text(json.dumps(kinds, indent=1) + "\n")
    print(to_markdown(rows, kinds, header=header))


if __name__ == "__main__":
    main()
