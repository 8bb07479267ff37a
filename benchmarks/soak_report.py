"""The soak's rows, verdict and report (``benchmarks/soak.py`` runs it; the definitions are in its docstring):
samples and the live process's JSON reports aggregated per interval, the RSS slope, the acceptance targets of
issue 28 with their measured values, and the markdown table."""

from __future__ import annotations

import itertools
import math
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fada_rt.video_out import probe_video

MB = 2**20
EXPECTED_EXIT = 128 + signal.SIGTERM  # 143
RSS_SLOPE_MAX = 1.0  # MB/min
AV_OFFSET_MAX_MS = 40.0
ROW_TAIL_S = 2.0  # a last stretch shorter than this joins the row before it


@dataclass(frozen=True)
class Sample:
    wall: float  # time.time()
    rss_mb: float
    fds: int  # open descriptors of every kind
    open_files: int  # regular files among them
    threads: int
    cpu_s: float  # user + system CPU seconds so far
    load1: float  # the machine's 1-minute load average


# ---- rows and the verdict --------------------------------------------------------------------------


def row_edges(*, t0: float, stop: float, interval: float) -> list[float]:
    """Row boundaries from ``t0`` to ``stop`` every ``interval`` s; a last stretch under :data:`ROW_TAIL_S`
    joins the row before it."""
    n = max(1, math.ceil((stop - t0 - ROW_TAIL_S) / interval))
    return [t0 + k * interval for k in range(n)] + [stop]


def with_deltas(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The interval reports in order, each with ``d_frames`` / ``d_speech`` / ``d_dropped`` / ``d_late`` /
    ``d_idle``: its counts minus the previous report's (the frames its timing figures are over)."""
    out, prev = [], {}
    keys = {"d_frames": "frames", "d_speech": "speech_frames", "d_dropped": "dropped_frames",
            "d_late": "late_frames", "d_idle": "idle_frames"}
    for r in records:
        if r.get("kind") != "interval":
            continue
        out.append({**r, **{d: r[k] - prev.get(k, 0) for d, k in keys.items()}})
        prev = r
    return out


def _weighted(values: Sequence[float | None], weights: Sequence[int]) -> float | None:
    pairs = [(v, w) for v, w in zip(values, weights) if v is not None and w > 0]
    total = sum(w for _, w in pairs)
    return round(sum(v * w for v, w in pairs) / total, 1) if total else None


def _max(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def make_rows(*, samples: Sequence[Sample], records: Sequence[dict[str, Any]], edges: Sequence[float]
              ) -> list[dict[str, Any]]:
    """A row per stretch between ``edges`` from the samples and the interval reports inside it (``[a, b)``)."""
    reports = with_deltas(records)
    rows = []
    for k, (a, b) in enumerate(itertools.pairwise(edges)):
        inside = [s for s in samples if a <= s.wall < b]
        before = [s for s in samples if s.wall < a]
        rep = [r for r in reports if a <= r["wall"] < b]
        row: dict[str, Any] = {"row": k + 1, "minute": round((b - edges[0]) / 60, 3), "seconds": round(b - a, 2),
                               "samples": len(inside), "reports": len(rep)}
        if inside:
            end, base = inside[-1], (before[-1] if before else inside[0])
            span = end.wall - base.wall
            row |= {"rss_mb": round(end.rss_mb, 2), "rss_mb_max": round(max(s.rss_mb for s in inside), 2),
                    "fds": end.fds, "fds_max": max(s.fds for s in inside), "open_files": end.open_files,
                    "threads": end.threads, "threads_max": max(s.threads for s in inside),
                    "cpu_percent": round((end.cpu_s - base.cpu_s) / span * 100, 1) if span > 0 else None,
                    "load1": round(end.load1, 2)}
        if rep:
            last = rep[-1]
            d_frames, d_speech = [r["d_frames"] for r in rep], [r["d_speech"] for r in rep]
            row |= {"frames": last["frames"], "frames_in": sum(d_frames), "fps": round(sum(d_frames) / (b - a), 2),
                    "av_offset_ms_last": last["av_offset_ms_last"],
                    "av_offset_ms_mean": _weighted([r["av_offset_ms_mean"] for r in rep], d_frames),
                    "av_offset_ms_max": _max([r["av_offset_ms_max"] for r in rep]),
                    "latency_ms_mean": _weighted([r["latency_ms_mean"] for r in rep], d_speech),
                    "latency_ms_max": _max([r["latency_ms_max"] for r in rep]),
                    "dropped_frames": sum(r["d_dropped"] for r in rep), "late_frames": sum(r["d_late"] for r in rep),
                    "idle_frames": sum(r["d_idle"] for r in rep), "rtf": last["rtf"],
                    "unrecorded_frames": max(_unrecorded(r) for r in rep)}
        rows.append(row)
    return rows


def _unrecorded(report: dict[str, Any]) -> int:
    """Emitted frames + the skipped slots the recording holds the picture for, minus the frames recorded (0 when
    the report has no recording)."""
    slots = report["frames"] + report.get("late_frames", 0)
    return slots - report.get("recorded_frames", slots)


def rss_slope(rows: Sequence[dict[str, Any]]) -> float | None:
    """MB/min: least squares of ``rss_mb`` on ``minute`` over the rows after the first; None under two."""
    pts = [(r["minute"], r["rss_mb"]) for r in rows[1:] if r.get("rss_mb") is not None]
    if len(pts) < 2:
        return None
    x, y = np.array(pts, np.float64).T
    dx = x - x.mean()
    return float((dx * (y - y.mean())).sum() / (dx * dx).sum())


@dataclass(frozen=True)
class RecordingCheck:
    path: str
    frames: int  # decoded
    fps: float
    video_duration: float
    audio_duration: float | None
    video_codec: str
    audio_codec: str | None
    pts_gaps: int  # frame slots missing between the first and last video timestamp
    pts_repeats: int  # video timestamps that occur more than once

    @property
    def playable(self) -> bool:
        return self.frames > 0 and self.audio_codec is not None and bool(self.audio_duration)

    @property
    def audio_short_frames(self) -> int:
        """Whole frames of audio missing at the end (the video is longer than the audio)."""
        if self.audio_duration is None:
            return self.frames
        return max(0, math.floor((self.video_duration - self.audio_duration) * self.fps + 1e-6))


def check_recording(path: Path) -> RecordingCheck:
    """Decode every frame (:func:`~fada_rt.video_out.probe_video`) and check the video timestamps."""
    import av

    info = probe_video(path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ticks = [round(float(p.pts * stream.time_base) * info.fps)
                 for p in container.demux(stream) if p.pts is not None]
    unique = set(ticks)
    gaps = (max(unique) - min(unique) + 1 - len(unique)) if unique else 0
    return RecordingCheck(path=str(path), frames=info.frames, fps=info.fps, video_duration=info.video_duration,
                          audio_duration=info.audio_duration, video_codec=info.video_codec,
                          audio_codec=info.audio_codec, pts_gaps=gaps, pts_repeats=len(ticks) - len(unique))


def assess(*, rows: Sequence[dict[str, Any]], final: dict[str, Any] | None, exit_code: int | None,
           recording: RecordingCheck | None) -> dict[str, Any]:
    """The figures of the run and each acceptance target with its measured value and whether it was met
    (None: not measured)."""
    slope = rss_slope(rows)
    offsets = [r.get("av_offset_ms_max") for r in rows] + [(final or {}).get("av_offset_ms_max")]
    offsets = [abs(v) for v in offsets if v is not None]
    av_max = max(offsets) if offsets else None
    emitted = None if final is None else final["emitted"]
    # the recording holds every emitted frame and, for each slot the clock skipped (late_frames), the held picture
    slots = None if emitted is None else emitted + int((final or {}).get("late_frames") or 0)
    uncalled: dict[str, int] | None = None
    if emitted is not None:
        uncalled = {"emitted_not_recorded": abs(slots - (recording.frames if recording else 0)),
                    "pts_gaps": recording.pts_gaps if recording else 0,
                    "audio_short_frames": recording.audio_short_frames if recording else 0}
    uncalled_total = None if uncalled is None else sum(uncalled.values())
    playable = recording is not None and recording.playable
    with_rss = [r for r in rows if r.get("rss_mb") is not None]
    figures = {
        "rss_slope_mb_per_min": None if slope is None else round(slope, 3),
        "rss_mb_first": with_rss[0]["rss_mb"] if with_rss else None,
        "rss_mb_last": with_rss[-1]["rss_mb"] if with_rss else None,
        "fds_first_last": [with_rss[0]["fds"], with_rss[-1]["fds"]] if with_rss else None,
        "threads_first_last": [with_rss[0]["threads"], with_rss[-1]["threads"]] if with_rss else None,
        "av_offset_ms_max_abs": av_max,
        "latency_ms_mean": (final or {}).get("latency_ms_mean"), "latency_ms_max": (final or {}).get("latency_ms_max"),
        "emitted_frames": emitted, "recorded_frames": recording.frames if recording else None,
        "clock_dropped_frames": (final or {}).get("dropped_frames"),
        "clock_late_frames": (final or {}).get("late_frames"), "idle_frames": (final or {}).get("idle_frames"),
        "uncalled_drops": uncalled, "exit_code": exit_code,
    }
    rec_text = ("no recording" if recording is None else
                f"{recording.frames} frames = {recording.video_duration:.2f} s {recording.video_codec}, audio "
                f"{recording.audio_duration or 0:.2f} s {recording.audio_codec}; {emitted} emitted + "
                f"{(slots or 0) - (emitted or 0)} skipped slots held")
    targets = [
        {"target": "RSS slope (rows after the first)", "wanted": f"< {RSS_SLOPE_MAX:g} MB/min",
         "measured": "needs 2 rows after the first" if slope is None else f"{slope:+.3f} MB/min",
         "met": None if slope is None else slope < RSS_SLOPE_MAX},
        {"target": "A/V offset (largest magnitude)", "wanted": f"<= {AV_OFFSET_MAX_MS:g} ms",
         "measured": "no report" if av_max is None else f"{av_max:.0f} ms",
         "met": None if av_max is None else av_max <= AV_OFFSET_MAX_MS},
        {"target": "drops not called by the clock", "wanted": "0",
         "measured": "no final report" if uncalled is None else
         f"{uncalled_total} ({', '.join(f'{k} {v}' for k, v in uncalled.items())})",
         "met": None if uncalled_total is None else uncalled_total == 0},
        {"target": "recording after SIGTERM", "wanted": f"exit {EXPECTED_EXIT}, playable, every emitted frame and "
                                                        "skipped slot",
         "measured": f"exit {exit_code}; {rec_text}",
         "met": exit_code == EXPECTED_EXIT and playable and recording is not None and recording.frames == slots},
    ]
    return {"figures": figures, "targets": targets}


# ---- the report ------------------------------------------------------------------------------------


def _f(value: Any, fmt: str = ".0f") -> str:
    return "–" if value is None else format(value, fmt)


def format_row(row: dict[str, Any]) -> str:
    return (f"[{row['row']:>3}] {row['minute']:6.2f} min | RSS {_f(row.get('rss_mb'))} MB "
            f"(max {_f(row.get('rss_mb_max'))}) | fds {_f(row.get('fds'), 'd')} | threads {_f(row.get('threads'), 'd')} "
            f"| CPU {_f(row.get('cpu_percent'))}% | frames {_f(row.get('frames'), 'd')} (fps {_f(row.get('fps'), '.1f')}) "
            f"| A/V offset {_f(row.get('av_offset_ms_last'))}/{_f(row.get('av_offset_ms_mean'))}/"
            f"{_f(row.get('av_offset_ms_max'))} ms | latency {_f(row.get('latency_ms_mean'))}/"
            f"{_f(row.get('latency_ms_max'))} ms | dropped {_f(row.get('dropped_frames'), 'd')} "
            f"late {_f(row.get('late_frames'), 'd')}")


def _met(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "**not met**")


def summary_text(results: dict[str, Any]) -> str:
    lines = [f"soak: {results['soak_seconds'] / 60:.1f} min, ended {results['ended']}"]
    lines += [f"  {t['target']}: {t['measured']} (wanted {t['wanted']}): {_met(t['met']).strip('*')}"
              for t in results["summary"]["targets"]]
    return "\n".join(lines)


def to_markdown(results: dict[str, Any]) -> str:
    cfg, m, fig = results["config"], results["machine"], results["summary"]["figures"]
    title = f"## Soak: the live loop for {results['soak_seconds'] / 60:.1f} min"
    if results["ended"] != "planned":
        title += f" (ended {results['ended']})"
    lines = [title, "",
             f"Started {results['started']} on {m['cpu']} ({m['cores_usable']} usable cores, load "
             f"{m['load_average_1_5_15']} at the start), OMP_NUM_THREADS={m['omp_num_threads_env']}. "
             f"Model: {results['model']}. Source ({cfg['speed']:g} x real time): {results['source']['pattern']}. "
             f"The live process's model load took {results['startup_seconds']:.0f} s (not in the rows).", "",
             f"`{results['command']}` (paths in a work folder), watched every {cfg['sample_every']:g} s; a row per "
             f"{cfg['interval']:g} s. A/V offset and latency on the avatar's clock (`fada_rt.preview.FrameTimer`); "
             "*dropped*: speech skipped past --max-latency and idle frames discarded for speech, *late*: output-clock "
             "slots that went by with no frame ready, the picture held (both called for by the clock); CPU in % of "
             "one core; load: the machine's 1-minute load.", "",
             "| min | RSS MB | RSS max | fds | files | threads | CPU % | load | frames | fps | A/V offset last / mean / "
             "max (ms) | latency mean / max (ms) | dropped | late | idle |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        g = r.get
        lines.append(f"| {r['minute']:.2f} | {_f(g('rss_mb'), '.1f')} | {_f(g('rss_mb_max'), '.1f')} | "
                     f"{_f(g('fds'), 'd')} | {_f(g('open_files'), 'd')} | {_f(g('threads'), 'd')} | "
                     f"{_f(g('cpu_percent'))} | {_f(g('load1'), '.2f')} | {_f(g('frames'), 'd')} | "
                     f"{_f(g('fps'), '.1f')} | {_f(g('av_offset_ms_last'))} / {_f(g('av_offset_ms_mean'))} / "
                     f"{_f(g('av_offset_ms_max'))} | {_f(g('latency_ms_mean'))} / {_f(g('latency_ms_max'))} | "
                     f"{_f(g('dropped_frames'), 'd')} | {_f(g('late_frames'), 'd')} | {_f(g('idle_frames'), 'd')} |")
    lines += ["", "| target | wanted | measured | |", "|---|---|---|---|"]
    lines += [f"| {t['target']} | {t['wanted']} | {t['measured']} | {_met(t['met'])} |"
              for t in results["summary"]["targets"]]
    lines += ["", f"RSS {_f(fig['rss_mb_first'], '.1f')} → {_f(fig['rss_mb_last'], '.1f')} MB (first → last row), "
                  f"descriptors {fig['fds_first_last']}, threads {fig['threads_first_last']}; latency over the run "
                  f"mean {_f(fig['latency_ms_mean'])} ms, max {_f(fig['latency_ms_max'])} ms; called for by the "
                  f"clock: {_f(fig['clock_dropped_frames'], 'd')} dropped, {_f(fig['clock_late_frames'], 'd')} late. "
                  "Drops not called for = |emitted + skipped slots − recorded frames| + gaps in the recording's video timestamps + "
                  "whole frames of audio missing from it (`benchmarks/soak.py`)."]
    return "\n".join(lines)
