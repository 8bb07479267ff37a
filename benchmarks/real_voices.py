"""Real voices: do the models' mouths move the same when a held-out speech engine talks over a degraded line?

``python -m benchmarks.real_voices --data HELDOUT --checkpoint DIR [DIR ...] --sampler fast --clips 24
--max-frames 150 --conditions clean telephone mp3 opus --out benchmarks/results --name NAME``

HELDOUT is a world of speech v2 clips of the held-out engine, e.g.
``python -m train.synthetic --out data/heldout-flite --clips 24 --size 64 --tier A --seed 11 --speech flite
--min-seconds 4 --max-seconds 6``; its labels' ``speech_segments`` (the spoken stretches) are needed.

For every condition the held-out clips' audio is processed (``clean``: unchanged; ``telephone``: 300-3400 Hz,
8 kHz; ``mp3`` 32 kbit/s, ``opus`` 24 kbit/s, ``aac`` 32 kbit/s round trips: :mod:`train.audio_augment`) and
each model generates the clips from their reference frame and the processed audio, with the same noise seed
in every condition. The generated frames are scored against the ground truth **with the clean audio
attached**, so the metrics' audio is the same in every condition: a change measures how the mouth moves,
not how the metric copes with the line. Columns: Sync-D / Sync-C, open r / width r (how the mouth follows
what the audio calls for, by the metrics' audio net), r(open, GT) / open err (how the mouth's openness follows
the ground-truth frames', no audio net involved), FID*, FVD*, jitter, and how the mouth closes when speech stops
(:mod:`fada_rt.metrics.closure` over the labels' segments cut to ``--max-frames``); a ground-truth row (its
frames, clean audio); per row open r / GT open r and Sync-D / GT Sync-D, and for a degraded condition every
metric relative to the same model's clean row (``vs_clean``) and the mean absolute pixel difference of its
frames from the clean ones (``frames_diff_vs_clean``, 8-bit levels: 0 means the line changed nothing).

Writes ``real_voices.json`` (settings, per-condition audio figures and rows) and ``real_voices.md`` (with
``--name``: ``real_voices-NAME.{json,md}``, so several runs coexist) under ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.quality_table import format_cell, ground_truth_row, load_refs
from fada_rt.backends.torch_backend import TorchBackend
from fada_rt.checkpoint import load_model
from fada_rt.clips import SAMPLE_RATE, Clip, read_labels
from fada_rt.pipeline import AvatarPipeline

if TYPE_CHECKING:  # the metrics (opencv, scipy: the [metrics] extra) are imported where they run: --help needs none
    from fada_rt.metrics.mouth import MouthEstimator
    from fada_rt.metrics.suite import Extractors

#: condition -> (codec, bit/s) of a lossy round trip; "clean" and "telephone" are not codecs
CODEC_CONDITIONS = {"mp3": ("mp3", 32000), "opus": ("opus", 24000), "aac": ("aac", 32000)}
CONDITIONS = ("clean", "telephone", *CODEC_CONDITIONS)
SUITE_KEYS = ("sync_distance", "sync_confidence", "mouth_open_corr", "mouth_width_corr", "fid", "fvd", "jitter")
METRICS = (("sync_distance", "Sync-D ↓", "{:.4f}"), ("sync_confidence", "Sync-C ↑", "{:.4f}"),
           ("mouth_open_corr", "open r ↑", "{:.3f}"), ("mouth_width_corr", "width r ↑", "{:.3f}"),
           ("gt_open_corr", "r(open, GT) ↑", "{:.3f}"), ("gt_open_mae", "open err ↓", "{:.3f}"),
           ("fid", "FID* ↓", "{:.2f}"), ("fvd", "FVD* ↓", "{:.2f}"), ("jitter", "jitter ↓", "{:.3f}"),
           ("closure_delay_mean", "close s ↓", "{:.3f}"), ("closure_delay_p90", "close p90 ↓", "{:.3f}"),
           ("closed_within_0.2s", "≤0.2 s ↑", "{:.2f}"), ("never_closed", "never ↓", "{:d}"),
           ("silence_open_mean", "sil. open ↓", "{:.3f}"), ("silence_open_p95", "sil. p95 ↓", "{:.3f}"))
RATIOS = (("open_r_vs_gt", "open r / GT", "{:.2f}"), ("sync_d_vs_gt", "Sync-D / GT", "{:.2f}"))
HF_HZ = 4000.0  # the telephone band ends at 3.4 kHz: energy above this is what a line removes


def process_audio(audio: np.ndarray, condition: str, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``audio`` as it arrives over ``condition`` (float32, same length and timing)."""
    from train.audio_augment import codec_round_trip, telephone

    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose from {CONDITIONS}")
    if condition == "clean":
        return np.asarray(audio, np.float32)
    if condition == "telephone":
        return telephone(audio, sample_rate=sample_rate)
    codec, bitrate = CODEC_CONDITIONS[condition]
    return codec_round_trip(audio, sample_rate=sample_rate, codec=codec, bitrate=bitrate)


def condition_refs(refs: Sequence[Clip], condition: str) -> list[Clip]:
    """The clips a model generates from in ``condition``: the refs with their audio processed."""
    return [dataclasses.replace(r, audio=process_audio(r.audio, condition)) for r in refs]


def audio_change(clean: Sequence[Clip], processed: Sequence[Clip]) -> dict[str, float]:
    """How much a condition changed the audio, pooled over clips: ``audio_snr_db`` (clean energy over the
    difference's; inf when unchanged) and ``audio_hf_db`` (energy above 4 kHz, processed over clean)."""
    sig = diff = hf_clean = hf_proc = 0.0
    for c, p in zip(clean, processed, strict=True):
        x, y = c.audio.astype(np.float64), p.audio.astype(np.float64)
        sig, diff = sig + float(np.sum(x**2)), diff + float(np.sum((y - x) ** 2))
        high = np.fft.rfftfreq(x.size, 1.0 / SAMPLE_RATE) >= HF_HZ
        hf_clean += float(np.sum(np.abs(np.fft.rfft(x)[high]) ** 2))
        hf_proc += float(np.sum(np.abs(np.fft.rfft(y)[high]) ** 2))
    return {"audio_snr_db": _db(sig, diff), "audio_hf_db": _db(hf_proc, hf_clean)}


def _db(num: float, den: float) -> float:
    if den == 0.0:
        return math.inf if num > 0 else 0.0
    return 10 * math.log10(num / den) if num > 0 else -math.inf


def speech_segments(data: str | Path, ref: Clip) -> list[tuple[float, float]]:
    """The labels' spoken stretches of ``ref``, cut to its (possibly shortened) length."""
    from fada_rt.metrics.closure import cut_segments

    labels = read_labels(data, ref.id)
    if "speech_segments" not in labels:
        raise ValueError(f"{data}: the labels of clip {ref.id} have no speech_segments; make the held-out world "
                         f"with world speech v2 (python -m train.synthetic ... --speech flite)")
    return cut_segments(labels["speech_segments"], ref.num_frames / ref.fps)


def openness_of(clips: Sequence[Clip], estimator: MouthEstimator) -> list[np.ndarray]:
    """Each clip's estimated mouth openness per frame (T,)."""
    return [estimator.face_states(c.frames)["open"] for c in clips]


def closure_scores(openness: Sequence[np.ndarray], segments: Sequence[Sequence[tuple[float, float]]], *, fps: int,
                   threshold: float, min_gap: float) -> dict[str, float | int]:
    """:mod:`fada_rt.metrics.closure` over the clips' openness, every end and silent frame pooled."""
    from fada_rt.metrics.closure import closure_events, summarize_closure

    return summarize_closure([closure_events(o, seg, fps=fps, threshold=threshold, min_gap=min_gap)
                              for o, seg in zip(openness, segments, strict=True)])


def follow_truth(openness: Sequence[np.ndarray], truth: Sequence[np.ndarray]) -> dict[str, float]:
    """How the generated mouth's openness follows the ground-truth frames' (both estimated), per clip, averaged:
    ``gt_open_corr`` (Pearson r) and ``gt_open_mae``. Unlike open r, no audio model is involved: the truth's
    mouth follows the engine's phones, which the metric's audio net (trained on the formant world) may not."""
    r = [float(np.corrcoef(o, t)[0, 1]) for o, t in zip(openness, truth, strict=True) if min(o.std(), t.std()) > 1e-6]
    return {"gt_open_corr": float(np.mean(r)) if r else math.nan,
            "gt_open_mae": float(np.mean([np.abs(o - t).mean() for o, t in zip(openness, truth, strict=True)]))}


def score_generated(generated: Sequence[Clip], refs: Sequence[Clip], segments: Sequence[Any],
                    truth: Sequence[np.ndarray], *, extractors: Extractors, threshold: float,
                    min_gap: float) -> dict[str, Any]:
    """The metrics of generated clips against the refs, the clean (ref) audio attached to the generated frames."""
    from fada_rt.metrics.suite import evaluate_clips

    clips = []
    for g, r in zip(generated, refs, strict=True):
        if g.id != r.id or g.num_frames != r.num_frames:
            raise ValueError(f"generated clip {g.id} ({g.num_frames} frames) does not match ref {r.id} "
                             f"({r.num_frames} frames)")
        clips.append(dataclasses.replace(g, audio=r.audio))
    s = evaluate_clips(clips, list(refs), extractors=extractors, progress=False)["summary"]
    openness = openness_of(clips, extractors.mouth)
    return {**{k: float(s.get(k, math.nan)) for k in SUITE_KEYS}, **follow_truth(openness, truth),
            **closure_scores(openness, segments, fps=refs[0].fps, threshold=threshold, min_gap=min_gap)}


def _ratio(a: Any, b: Any) -> float:
    a, b = float(a), float(b)
    return a / b if math.isfinite(a) and math.isfinite(b) and b != 0 else math.nan


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each model row's open r / GT open r and Sync-D / GT Sync-D; each degraded row's metrics over the same
    model's clean row (``vs_clean``)."""
    gt = next(r for r in rows if r["model"] == "Ground truth")
    clean = {r["model"]: r for r in rows if r["condition"] == "clean" and r is not gt}
    for r in rows:
        if r is gt:
            continue
        r["open_r_vs_gt"] = _ratio(r["mouth_open_corr"], gt["mouth_open_corr"])
        r["sync_d_vs_gt"] = _ratio(r["sync_distance"], gt["sync_distance"])
        if r["condition"] != "clean" and r["model"] in clean:
            r["vs_clean"] = {k: _ratio(r[k], clean[r["model"]][k]) for k, _, _ in METRICS}


def model_labels(folders: Sequence[str | Path]) -> list[str]:
    """The shortest trailing parts of the checkpoint paths that tell them apart (``distill-ns/fast/student``)."""
    parts = [Path(f).resolve().parts for f in folders]
    first = 2 if any(p[-1] in ("student", "teacher") for p in parts) else 1  # RUN/student: name the run too
    for n in range(first, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-n:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    raise ValueError(f"the same checkpoint was given twice: {[str(f) for f in folders]}")


def to_markdown(result: dict[str, Any]) -> str:
    s, rows = result["settings"], result["rows"]
    lines = [f"## Real voices: {s['clips']} held-out clips of {s['data']} ({s['max_frames']} frames), sampler "
             f"{s['sampler']}, noise seed {s['seed']}", "",
             "Generated from the condition's audio, scored with the clean audio. open r / width r: the mouth "
             "against what the metric's audio net calls for; r(open, GT) / open err: its openness against the "
             "ground-truth frames' (no audio net). close s / p90: seconds from a "
             f"segment end (>= {s['min_gap']} s of silence) to the first frame with openness <= {s['threshold']}; "
             "≤0.2 s: share of ends closed within 0.2 s; never: ends never closed; sil. open / p95: openness in "
             "silences (>= 0.2 s after speech, 0.1 s before it).", "",
             "| Model | Condition | " + " | ".join(c[1] for c in METRICS + RATIOS) + " |",
             "|---|---|" + "---:|" * (len(METRICS) + len(RATIOS))]
    for r in rows:
        lines.append(f"| {r['model']} | {r['condition']} | "
                     + " | ".join(format_cell(r.get(k), f) for k, _, f in METRICS + RATIOS) + " |")
    degraded = [r for r in rows if "vs_clean" in r]
    if degraded:
        lines += ["", "### Relative to the same model's clean row", "",
                  "| Model | Condition | frame diff | " + " | ".join(c[1] for c in METRICS) + " |",
                  "|---|---|---:|" + "---:|" * len(METRICS)]
        lines += [f"| {r['model']} | {r['condition']} | {format_cell(r.get('frames_diff_vs_clean'), '{:.2f}')} | "
                  + " | ".join(format_cell(r["vs_clean"][k], "{:.2f}") for k, _, _ in METRICS) + " |" for r in degraded]
    lines += ["", "### The audio the models got", "", "| Condition | SNR vs clean (dB) | energy > 4 kHz (dB) |",
              "|---|---:|---:|"]
    lines += [f"| {c} | {a['audio_snr_db']:.1f} | {a['audio_hf_db']:.1f} |" for c, a in result["audio"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description="Score checkpoints on held-out real-voice clips over degraded audio.")
    p.add_argument("--data", required=True, help="held-out world of speech v2 clips (labels with speech_segments)")
    p.add_argument("--checkpoint", required=True, nargs="+", metavar="DIR", help="checkpoint folder(s)")
    p.add_argument("--sampler", default="fast", help="sampler of every checkpoint (default: %(default)s)")
    p.add_argument("--cfg-audio", type=float, default=None, help="guidance scale cfg_a (default: the checkpoint's)")
    p.add_argument("--cfg-ref", type=float, default=None, help="guidance scale cfg_r (default: the checkpoint's)")
    p.add_argument("--manifest", default="A", help="held-out manifest (default: %(default)s)")
    p.add_argument("--clips", type=int, default=24, help="held-out clips (default: %(default)s)")
    p.add_argument("--max-frames", type=int, default=150, help="frames per clip (default: %(default)s)")
    p.add_argument("--conditions", nargs="+", default=["clean", "telephone", "mp3", "opus"], choices=CONDITIONS,
                   help="audio conditions (default: %(default)s); the ratios to clean need clean")
    p.add_argument("--seed", type=int, default=0, help="noise seed, the same in every condition (clip i: seed + i)")
    p.add_argument("--threshold", type=float, default=0.1, help="openness of a closed mouth (default: %(default)s)")
    p.add_argument("--min-gap", type=float, default=0.3, help="silence after an end to score it, s (default: %(default)s)")
    p.add_argument("--out", default="benchmarks/results", help="output folder (default: %(default)s)")
    p.add_argument("--name", default=None, help="write real_voices-NAME.{json,md} (default: real_voices.{json,md})")
    args = p.parse_args(argv)
    from fada_rt.metrics.generation import generate_clips
    from fada_rt.metrics.suite import Extractors

    conditions = sorted(dict.fromkeys(args.conditions), key=lambda c: c != "clean")  # clean first: the ratios
    labels = model_labels(args.checkpoint)
    refs = load_refs(args.data, clips=args.clips, manifest=args.manifest, max_frames=args.max_frames)
    segments = [speech_segments(args.data, r) for r in refs]
    inputs = {c: condition_refs(refs, c) for c in conditions}  # fails early on a missing codec
    audio = {c: audio_change(refs, inputs[c]) for c in conditions}
    extractors = Extractors.synthetic()
    opts = {"extractors": extractors, "threshold": args.threshold, "min_gap": args.min_gap}
    print(f"ground truth: {len(refs)} clips", flush=True)
    gt, truth = ground_truth_row(refs, extractors), openness_of(refs, extractors.mouth)
    rows: list[dict[str, Any]] = [{"model": "Ground truth", "condition": "clean", "checkpoint": None,
                                   **{k: gt[k] for k in SUITE_KEYS}, **follow_truth(truth, truth),
                                   **closure_scores(truth, segments, fps=refs[0].fps, threshold=args.threshold,
                                                    min_gap=args.min_gap)}]
    for label, folder in zip(labels, args.checkpoint, strict=True):
        model, meta = load_model(folder)
        pipeline = AvatarPipeline(TorchBackend(model, role=meta["role"]), sampler=args.sampler,
                                  cfg_audio=args.cfg_audio, cfg_ref=args.cfg_ref)
        clean_frames = None
        for condition in conditions:
            print(f"{label} / {condition}: generating {len(refs)} clips", flush=True)
            generated = generate_clips(pipeline, inputs[condition], seed=args.seed)
            row = {"model": label, "condition": condition, "checkpoint": str(folder), "nfe": pipeline.nfe,
                   **score_generated(generated.clips, refs, segments, truth, **opts),
                   "seconds_per_frame": generated.seconds / generated.frames}
            if condition == "clean":
                clean_frames = [c.frames for c in generated.clips]
            elif clean_frames is not None:
                row["frames_diff_vs_clean"] = float(np.mean([np.abs(c.frames.astype(np.int16) - f).mean()
                                                             for c, f in zip(generated.clips, clean_frames)]))
            print(f"  Sync-D {row['sync_distance']:.4f}  open r {row['mouth_open_corr']:.3f}  close "
                  f"{row['closure_delay_mean']:.3f} s  silence open {row['silence_open_mean']:.3f}", flush=True)
            rows.append(row)
    add_ratios(rows)
    result = {"settings": {"data": str(args.data), "manifest": args.manifest, "clips": len(refs),
                           "max_frames": args.max_frames, "sampler": args.sampler, "seed": args.seed,
                           "conditions": conditions, "threshold": args.threshold, "min_gap": args.min_gap,
                           "cfg": [args.cfg_audio, args.cfg_ref]},
              "audio": audio, "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"real_voices-{args.name}" if args.name else "real_voices"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{stem}.md").write_text(to_markdown(result) + "\n")
    print(to_markdown(result))
    return result


if __name__ == "__main__":
    main()
