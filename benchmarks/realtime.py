"""Real-time rows of ``benchmarks.nfe_latency``: latency as a live user feels it (docs/design.md §4, §8).

The chunk table times one step at a time with all audio already there; in a call the audio arrives as it is
spoken. :func:`realtime_run` plays an audio clip into a :class:`StreamingSession` at its real pace, in blocks of
``block_ms`` from a feeder thread (a microphone's callback), while the calling thread steps the session whenever
it has work, as the live loop does. For every frame it records when the frame came out. Definitions:

* first frame — from the first audio sample's capture (the start of the clip) to the first frame out;
* audio-to-frame latency — for frame ``k``, from the capture of its audio's centre sample (``(k + 1/2) / fps`` into
  the clip) to the frame out: glass to glass inside the process (no device buffers, no display). Median, p90 and
  max over the frames after the first second;
* fps — frames out per wall second over the run; RTF — compute seconds per second of video (``SessionStats.rtf``).
  A chunk sampler keeps up when it is below 1. A rolling sampler never waits while frames are in flight, so it
  turns spare compute into extra, smaller calls (less latency) and sits near 1 by design; whether it keeps up
  shows in ``latency_growth_s``, the last second's median latency minus the second second's (its work per frame
  is the chunk table's RTF, a call with the pipeline full).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import torch

from fada_rt.pipeline import AvatarPipeline
from fada_rt.streaming import StreamingSession


def realtime_run(pipeline: AvatarPipeline, *, image: np.ndarray, audio: np.ndarray, seed: int = 0,
                 block_ms: float = 20.0) -> dict[str, Any]:
    """One real-time run of ``audio`` (mono at the model's rate) through ``pipeline``; returns the row's numbers."""
    rate, fps = pipeline.config.audio.sample_rate, pipeline.config.audio.fps
    block = max(1, round(rate * block_ms / 1000))
    session = StreamingSession(pipeline, pipeline.prepare(image), generator=torch.Generator().manual_seed(seed),
                               clock=time.perf_counter)
    wake = threading.Event()
    t0 = time.perf_counter()

    def feed() -> None:  # each block is pushed when its last sample has been "spoken"
        for start in range(0, audio.size, block):
            part = audio[start : start + block]
            due = t0 + (start + part.size) / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            session.push(part, arrival=time.perf_counter())
            wake.set()
        session.finish()
        wake.set()

    feeder = threading.Thread(target=feed, name="realtime-feeder", daemon=True)
    feeder.start()
    out_times: list[float] = []
    while not (session.done and not feeder.is_alive()):
        out = session.step() if session.chunk_ready() else None
        if out is None:
            wake.wait(0.005)
            wake.clear()
            continue
        now = time.perf_counter()
        out_times += [now - t0] * len(out.frames)
    feeder.join()
    emitted = np.array(out_times)  # (T,) seconds after the start of the clip
    k = np.arange(emitted.size)
    latency = emitted - (k + 0.5) / fps
    steady = latency[k >= fps] if emitted.size > 2 * fps else latency
    second = latency[(k >= fps) & (k < 2 * fps)]
    last = latency[k >= emitted.size - fps]
    stats = session.stats
    return {
        "sampler": pipeline.sampler.name,
        "frames": int(emitted.size),
        "audio_s": audio.size / rate,
        "first_frame_s": float(emitted[0]),
        "latency_median_s": float(np.median(steady)),
        "latency_p90_s": float(np.percentile(steady, 90)),
        "latency_max_s": float(steady.max()),
        "latency_growth_s": float(np.median(last) - np.median(second)) if second.size and last.size else 0.0,
        "latency_floor_s": session.latency_floor,
        "fps": float(emitted.size / (emitted[-1] - emitted[0])) if emitted.size > 1 else 0.0,
        "rtf": float(stats.rtf),
        "steps": int(stats.chunks),
        "block_ms": block_ms,
    }


def realtime_rows(pipelines: dict[str, AvatarPipeline], *, image: np.ndarray, audio: np.ndarray, rounds: int = 2,
                  seed: int = 0) -> list[dict[str, Any]]:
    """Each pipeline ``rounds`` times, alternating (A B A B: drift and background load hit both alike); per name
    the medians over its rounds, and each round's numbers."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in pipelines}
    for _ in range(rounds):
        for name, pipeline in pipelines.items():
            runs[name].append(realtime_run(pipeline, image=image, audio=audio, seed=seed))
    rows = []
    for name, rs in runs.items():
        keys = ("first_frame_s", "latency_median_s", "latency_p90_s", "latency_max_s", "latency_growth_s", "fps", "rtf")
        rows.append({"variant": name, "backend": "torch", "rounds": len(rs), "frames": rs[0]["frames"],
                     "audio_s": rs[0]["audio_s"], "latency_floor_s": rs[0]["latency_floor_s"],
                     **{key: float(np.median([r[key] for r in rs])) for key in keys}, "runs": rs})
    return rows


def realtime_markdown(rows: list[dict[str, Any]], *, targets: dict[str, float] | None = None) -> list[str]:
    """The real-time table (and the targets: first frame and audio-to-frame latency of the rolling sampler)."""
    if not rows:
        return []
    r0 = rows[0]
    lines = ["", f"Real time: {r0['audio_s']:.0f} s of audio played in {r0['runs'][0]['block_ms']:g} ms blocks, "
                 f"{r0['rounds']} alternating rounds per row (medians):", "",
             "| variant | backend | first frame (s) | audio-to-frame median (s) | p90 (s) | max (s) | growth (s) "
             "| floor (s) | fps | RTF |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['backend']} | {r['first_frame_s']:.3f} | {r['latency_median_s']:.3f} | "
                     f"{r['latency_p90_s']:.3f} | {r['latency_max_s']:.3f} | {r['latency_growth_s']:+.3f} | "
                     f"{r['latency_floor_s']:.3f} | {r['fps']:.1f} | {r['rtf']:.2f} |")
    return lines
