"""The rows of ``benchmarks.nfe_latency``: a variant on a backend, measured, summarised, rendered.

:class:`Row` runs one variant on one backend through the library's live loop and keeps its timed
samples; :func:`chunk_flops` counts a chunk's FLOPs; :func:`summarise` turns a row's samples into its
JSON row, :func:`run_summary` adds what compares rows measured in the same run (teacher/fast
wall-clock ratios, the best fast student, the issue's targets — reported, never asserted) and
:func:`markdown_report` renders the result. Definitions: ``benchmarks.nfe_latency``'s docstring.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmarks.machine import FlopProbe, InstrumentedBackend, MemoryProbe, SpanTimer, synchronize
from benchmarks.realtime import realtime_markdown
from fada_rt.backends.base import Backend
from fada_rt.config import ModelConfig
from fada_rt.pipeline import AvatarPipeline
from fada_rt.sampling import SAMPLERS
from fada_rt.streaming import StreamingSession

# category in the timed samples -> name in the JSON breakdown
BREAKDOWN = {"audio": "audio_features", "conditions": "conditions", "denoise": "denoise", "decode": "vae_decode"}
NFE_RATIO = SAMPLERS["teacher"].nfe / SAMPLERS["fast"].nfe  # 12.5


@dataclass(frozen=True)
class Variant:
    name: str
    sampler: str  # key of fada_rt.sampling.SAMPLERS
    role: str  # checkpoint role
    cfg_mode: str  # cfg mode of its model
    weights: str = ""  # the variant whose model it runs (--checkpoint-dir/<weights>); "": its own
    overlap_decode: bool = False  # StreamingSession(overlap_decode=): the next chunk's steps beside this decode

    @property
    def model(self) -> str:
        return self.weights or self.name


VARIANTS = {
    "teacher": Variant("teacher", "teacher", "teacher", "none"),
    "balanced": Variant("balanced", "balanced", "student", "none"),
    "fast": Variant("fast", "fast", "student", "layer_tokens"),
    "stream": Variant("stream", "stream", "student", "layer_tokens"),  # rolling: one "chunk" is one call
    "fast-overlap": Variant("fast-overlap", "fast", "student", "layer_tokens", weights="fast", overlap_decode=True),
}


# ---- one row: a variant on a backend ----------------------------------------------------------------


class Row:
    """One variant on one backend: its pipeline, live session and timed samples."""

    def __init__(self, variant: Variant, backend_name: str, backend: Backend, *, image: np.ndarray,
                 audio: np.ndarray, seed: int) -> None:
        self.variant, self.backend_name = variant, backend_name
        self.device = backend.device
        self.timer = SpanTimer(backend.device)
        self.backend = InstrumentedBackend(backend, self.timer)
        self.pipeline = AvatarPipeline(self.backend, sampler=variant.sampler)  # type: ignore[arg-type]
        self.session = StreamingSession(self.pipeline, self.pipeline.prepare(image), overlap_decode=variant.overlap_decode,
                                        generator=torch.Generator(device=backend.device).manual_seed(seed))
        self.session.push(audio)
        if self.pipeline.rolling or variant.overlap_decode:  # fill the pipeline (a rolling frame 0 takes a call per
            self.session.step()  # step; an overlapped first step makes two chunks): steady state from here
        self.samples: list[dict[str, float]] = []
        self.samples_prepare: list[float] = []

    def prepare(self, image: np.ndarray) -> float:
        """Seconds of one avatar prepare (a new portrait: the pipeline's avatar cache misses)."""
        synchronize(self.device)
        t0 = time.perf_counter()
        self.pipeline.prepare(image)
        synchronize(self.device)
        return time.perf_counter() - t0

    def chunk(self, memory: MemoryProbe) -> dict[str, float]:
        """Time one chunk of the live loop: seconds in total and per category, NFE, peak memory."""
        synchronize(self.device)
        self.timer.reset()
        self.backend.nfe = 0
        memory.begin()
        t0 = time.perf_counter()
        out = self.session.step()
        synchronize(self.device)
        total = time.perf_counter() - t0
        if out is None or len(out.frames) != self.pipeline.step_frames:
            raise RuntimeError("the session ran out of audio; this is a bug in the benchmark's audio length")
        expected, nfe = SAMPLERS[self.variant.sampler].nfe, self.backend.nfe / len(out.frames)
        if nfe != expected:
            raise RuntimeError(f"{self.variant.name} on {self.backend_name}: counted {nfe:g} denoiser evaluations "
                               f"per frame, the sampler declares {expected}")
        return {"total": total, **self.timer.totals(), "nfe": nfe, "peak_memory": memory.peak(),
                "chunk_memory": memory.growth()}

    @property
    def latency_floor(self) -> float:
        return self.session.latency_floor


def chunk_flops(backend: Backend, variant: Variant, *, image: np.ndarray, audio: np.ndarray,
                seed: int) -> dict[str, int]:
    """FLOPs per category of one steady-state chunk (the second: full audio context; a rolling sampler's second step
    is its first with the pipeline full) and of prepare."""
    probe = FlopProbe()
    instrumented = InstrumentedBackend(backend, probe)
    pipeline = AvatarPipeline(instrumented, sampler=variant.sampler)  # type: ignore[arg-type]
    session = StreamingSession(pipeline, pipeline.prepare(image),
                               generator=torch.Generator(device=backend.device).manual_seed(seed))
    prepare = probe.flops["prepare"]
    session.push(audio)
    session.step()
    probe.reset()
    session.step()
    return {**probe.flops, "prepare": prepare}


def parity(eager: Backend, backend: Backend, variant: Variant, *, image: np.ndarray, audio: np.ndarray,
           seed: int) -> dict[str, float]:
    """``backend`` against ``eager`` (the same model): the first frames out of a fresh session each (a chunk, or a
    rolling sampler's first call with frames out) from the same portrait, audio and seed; 8-bit levels."""
    frames = []
    for b in (eager, backend):
        pipeline = AvatarPipeline(b, sampler=variant.sampler)
        session = StreamingSession(pipeline, pipeline.prepare(image),
                                   generator=torch.Generator(device=b.device).manual_seed(seed))
        session.push(audio)
        while (out := session.step()) is not None and not len(out.frames):
            pass
        if out is None:
            raise RuntimeError("the parity session ran out of audio; this is a bug in the benchmark's audio length")
        frames.append(np.asarray(out.frames).astype(np.int16))
    diff = np.abs(frames[0] - frames[1])
    return {"max_levels": float(diff.max()), "mean_levels": float(diff.mean()), "frames": len(diff)}


# ---- JSON rows and summary ------------------------------------------------------------------------


def summarise(row: Row, *, config: ModelConfig, settings: dict[str, Any], flops: dict[str, int],
              peak: dict[str, Any]) -> dict[str, Any]:
    """The JSON row of ``row`` after its repetitions (``flops``: :func:`chunk_flops`; ``peak``:
    :func:`benchmarks.machine.measure_peak_flops`)."""
    samples = row.samples
    totals = np.array([s["total"] for s in samples])
    nfe = {int(s["nfe"]) for s in samples}
    if len(nfe) != 1:
        raise RuntimeError(f"{row.variant.name} on {row.backend_name}: NFE changed between chunks: {sorted(nfe)}")
    nfe_count = nfe.pop()
    frames = row.pipeline.step_frames
    audio_s = frames / config.audio.fps
    median = float(np.median(totals))
    parts = {name: float(np.median([s.get(cat, 0.0) for s in samples])) for cat, name in BREAKDOWN.items()}
    other = [s["total"] - sum(s.get(cat, 0.0) for cat in BREAKDOWN) for s in samples]
    chunk_flops = int(sum(flops.get(cat, 0) for cat in BREAKDOWN))
    achieved = chunk_flops / median
    return {
        "variant": row.variant.name,
        "backend": row.backend_name,
        "preset": settings["preset"],
        "device": settings["device"],
        "dtype": settings["dtype"],
        "nfe": nfe_count,
        "chunk_frames": frames,  # frames per step: a chunk, or a rolling call's
        "chunk_audio_s": audio_s,
        "chunk_latency_median_s": median,
        "chunk_latency_p90_s": float(np.percentile(totals, 90)),
        "chunk_latency_min_s": float(totals.min()),
        "latency_per_nfe_ms": parts["denoise"] / nfe_count * 1000.0,
        "fps": frames / median,
        "rtf": median / audio_s,
        # a rolling sampler's first frame takes one call per step of its plan (fewer frames in flight: an upper bound)
        "first_frame_latency_s": row.latency_floor + median * (row.pipeline.sampler.plan.num_steps
                                                               if row.pipeline.rolling else 1),
        "latency_floor_s": row.latency_floor,
        "breakdown_median_s": {**parts, "other": float(np.median(other))},
        "prepare_median_s": float(np.median(row.samples_prepare)),
        "peak_memory_bytes": int(max(s["peak_memory"] for s in samples)),
        "chunk_memory_bytes": int(max(s["chunk_memory"] for s in samples)),
        "chunk_flops": chunk_flops,
        "flops_breakdown": {BREAKDOWN.get(k, k): int(v) for k, v in flops.items()},
        "achieved_tflops": achieved / 1e12,
        "peak_share": achieved / peak["flops_per_s"],
        "repeats": len(samples),
        "chunk_latencies_s": [float(t) for t in totals],
    }


def run_summary(rows: list[dict[str, Any]], *, preset: str, fps: int,
                realtime: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Teacher/fast ratios per backend (paired per repetition and of the medians), the best fast
    student, and the issue's targets with whether this run met them (real time: the video's ``fps``; the rolling
    sampler's latencies from the ``realtime`` rows)."""
    by = {(r["variant"], r["backend"]): r for r in rows}
    ratios = {}
    for backend in dict.fromkeys(r["backend"] for r in rows):
        teacher, fast = by.get(("teacher", backend)), by.get(("fast", backend))
        if teacher and fast:
            paired = np.array(teacher["chunk_latencies_s"]) / np.array(fast["chunk_latencies_s"])
            ratios[backend] = {"paired_median": float(np.median(paired)),
                               "of_medians": teacher["chunk_latency_median_s"] / fast["chunk_latency_median_s"]}
    fast_rows = [r for r in rows if r["variant"] == "fast"]
    best = min(fast_rows, key=lambda r: r["chunk_latency_median_s"]) if fast_rows else None
    targets = []
    if best is not None and preset == "sd15":
        targets += [_target("fast student fps, best backend", best["fps"], ">=", float(fps)),
                    _target("fast student fps, best backend (stretch)", best["fps"], ">=", 30.0),
                    _target("fast student first-frame latency (s), best backend", best["first_frame_latency_s"], "<=", 1.0)]
    elif best is not None:
        targets.append(_target("fast student RTF, best backend", best["rtf"], "<=", 1.0))
    targets += [_target(f"teacher/fast wall-clock ratio ({b}, paired)", v["paired_median"], ">=", 10.0)
                for b, v in ratios.items()]
    live = {r["variant"]: r for r in realtime or []}
    if "stream" in live:
        r = live["stream"]
        first, lag = (0.3, None) if preset == "sd15" else (0.25, 0.3)
        targets.append(_target("stream first frame in real time (s)", r["first_frame_s"], "<=", first))
        if lag is not None:
            targets.append(_target("stream audio-to-frame latency in real time, median (s)", r["latency_median_s"],
                                   "<=", lag))
        # in real time a rolling session spends spare compute on extra calls (lower latency), so its own RTF sits
        # near 1 by design: it keeps up when its latency does not grow, and its work per frame is the table's RTF
        targets.append(_target("stream latency growth over the real-time run (s)", r["latency_growth_s"], "<=", 0.1))
    stream_rows = [x for x in rows if x["variant"] == "stream"]
    if stream_rows:
        targets.append(_target("stream RTF, a call with the pipeline full", min(x["rtf"] for x in stream_rows),
                               "<=", 1.0))
    return {
        "nfe_ratio_teacher_fast": NFE_RATIO,
        "teacher_fast_ratio": ratios,
        "best_fast": None if best is None else {k: best[k] for k in ("backend", "rtf", "fps", "first_frame_latency_s")},
        "targets": targets,
    }


def _target(name: str, value: float, op: str, bound: float) -> dict[str, Any]:
    met = value <= bound if op == "<=" else value >= bound
    return {"name": name, "value": value, "target": f"{op} {bound:g}", "met": bool(met)}


# ---- markdown ------------------------------------------------------------------------------------


def markdown_report(result: dict[str, Any]) -> str:
    s, m, rows = result["settings"], result["machine"], result["rows"]
    gpu = f", GPU {m['gpu']['name']}" if m.get("gpu") else ""
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v and k in ("torch", "onnxruntime", "diffusers"))
    lines = [
        f"## NFE, latency, throughput — preset {s['preset']} on {s['device']} ({s['dtype']}), "
        f"chunks of F={s['chunk_frames']} frames at {s['resolution']}x{s['resolution']}",
        "",
        f"{m['cpu']} ({m['cores_usable']} usable cores, torch threads {s['threads']['torch']}, onnxruntime "
        f"{s['threads']['onnxruntime_intra_op']}){gpu}; {libs}; load average {m['load_average_1_5_15']} at start, "
        f"{m['load_average_end']} at end; while timing, other processes used "
        f"{100 * m['cpu_during_timing']['others_share']:.0f}% of the CPU (steal {100 * m['cpu_during_timing']['steal_share']:.0f}%). "
        f"{s['repeats']} interleaved repetitions after {s['warmup']} warm-up "
        f"chunk(s); weights: {s['weights']}; decoder: {s.get('decoder', 'vae')}. Peak matmul rate measured: {result['peak_flops']['tflops']:.3g} "
        f"TFLOP/s ({result['peak_flops']['dtype']}).",
        "",
        "| variant | backend | NFE | chunk median (s) | chunk p90 (s) | ms / NFE | fps | RTF | first frame (s) "
        "| peak mem (MiB) | chunk mem (MiB) | GFLOP / chunk | TFLOP/s | % of peak |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['backend']} | {r['nfe']} | {r['chunk_latency_median_s']:.3f} | "
            f"{r['chunk_latency_p90_s']:.3f} | {r['latency_per_nfe_ms']:.1f} | {r['fps']:.1f} | {r['rtf']:.2f} | "
            f"{r['first_frame_latency_s']:.2f} | {r['peak_memory_bytes'] / 2**20:.0f} | {r['chunk_memory_bytes'] / 2**20:.0f} | {r['chunk_flops'] / 1e9:.1f} | "
            f"{r['achieved_tflops']:.3g} | {100 * r['peak_share']:.1f} |")
    lines += ["", "Breakdown, median ms per chunk (avatar prepare: once per portrait):", "",
              "| variant | backend | audio features | conditions | denoise | VAE decode | other | avatar prepare |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        b = r["breakdown_median_s"]
        lines.append(f"| {r['variant']} | {r['backend']} | {1e3 * b['audio_features']:.1f} | {1e3 * b['conditions']:.1f} "
                     f"| {1e3 * b['denoise']:.1f} | {1e3 * b['vae_decode']:.1f} | {1e3 * b['other']:.1f} "
                     f"| {1e3 * r['prepare_median_s']:.1f} |")
    summary = result["summary"]
    lines.append("")
    for backend, ratio in summary["teacher_fast_ratio"].items():
        lines.append(f"- teacher/fast wall-clock ratio on {backend}: {ratio['paired_median']:.2f}x paired per "
                     f"repetition, {ratio['of_medians']:.2f}x of the medians (NFE ratio {summary['nfe_ratio_teacher_fast']:g})")
    if summary["best_fast"]:
        b = summary["best_fast"]
        lines.append(f"- best fast student: {b['backend']}, RTF {b['rtf']:.2f}, {b['fps']:.1f} fps, "
                     f"first frame {b['first_frame_latency_s']:.2f} s")
    for r in rows:
        if "parity_vs_eager" in r:
            p = r["parity_vs_eager"]
            lines.append(f"- parity, {r['variant']} on {r['backend']} vs torch eager: max {p['max_levels']:g}, mean "
                         f"{p['mean_levels']:.3f} levels over {p['frames']} frame(s)")
    for t in summary["targets"]:
        lines.append(f"- target {t['name']} {t['target']}: {t['value']:.3g} — {'met' if t['met'] else 'NOT met'}")
    for u in result["unavailable"]:
        lines.append(f"- {u['backend']}{' / ' + u['variant'] if 'variant' in u else ''}: not run — {u['reason']}")
    lines.append(f"- first frame = latency floor (chunk audio + feature look-ahead, "
                 f"{rows[0]['latency_floor_s']:.3f} s) + median chunk latency (a rolling sampler: its floor, one frame + "
                 "look-ahead, + one call per step); peak mem: "
                 f"{s['memory_method']}; chunk mem: its growth during the chunk")
    lines += realtime_markdown(result.get("realtime", []))
    return "\n".join(lines)
