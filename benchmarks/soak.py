"""The soak benchmark: the live loop for an hour, watched from outside (issue 28).

``python -m benchmarks.soak --minutes 60 --out benchmarks/results/soak``; in the background, detached from the
terminal (a hangup would end it early): ``setsid nohup python -m benchmarks.soak --minutes 60 > soak.log 2>&1 &``.

**What runs.** ``python -m fada_rt.live --audio-file WORK/source.wav --no-preview --record WORK/soak.mp4
--stats-jsonl WORK/live.jsonl`` as a process of its own: what is measured is that process, not this one. The
source is the shipped example speech (:data:`~fada_rt.assets.EXAMPLE_AUDIO`, 7 s) repeated, with silences of
:data:`SILENCES` seconds between the passes in turn, long enough for the run plus :data:`SOURCE_MARGIN_S`. The
file source pushes every sample, the silences too: they are spoken silence (the mouth at rest) in one open turn,
and idle frames come only when the source falls behind the output clock.

**Pace: real time** (``--speed 1``, the default). The live avatar emits its frames on a real-time output clock
whatever the source's pace: a faster source (``--speed 2``) only piles up speech that ``--max-latency`` then
skips (drops the clock called for), and an unpaced file source runs the offline avatar (no clock, no idle frames,
no drops: not the live loop). So an hour of soak takes an hour; ``--speed`` is there to try, not to save time.

**Watched.** Every ``--sample-every`` seconds the child's RSS, open descriptors (all, and regular files),
threads and CPU time (psutil), and the machine's load; its reports (one a second) from ``--stats-jsonl``. The
soak starts with the first report (the model is loaded, frames flow). Per ``--interval`` a row: RSS at the end
and the maximum, descriptors, files, threads, CPU % of one core, frames (total and in the interval), A/V offset
last / mean / max, latency mean / max, and the drops the clock called for. After ``--minutes``, SIGTERM; the exit
code must be 143 and the recording playable: every frame decoded, video timestamps without gaps, an audio
stream as long as the video, and exactly the frames the process reported emitting.

**Definitions** (:func:`assess`).

* RSS slope: least-squares slope of the rows' end-of-interval RSS (MB = 2**20 bytes) against the interval's
  end (minutes), over the rows after the first (warm-up); it needs two such rows.
* A/V offset: :class:`~fada_rt.preview.FrameTimer`'s, per frame: (emitted - first emitted) - (pts - first pts),
  how far the picture trails an audio clock started with the first frame. The avatar's output clock holds (a
  frame the model made late takes the slot due now, the missed slots stay empty), so it stays under a frame;
  frames never leave before their time, so it is >= 0; the figure is the largest the process reported (its
  run-long maximum and every interval's).
* Drops the clock called for: ``dropped_frames`` (speech that waited longer than ``--max-latency``, skipped
  unmade; idle frames discarded when speech came) and ``late_frames`` (slots of the output clock that went by
  with no frame ready: the picture held). Reported, not counted against the run.
* Drops the clock did not call for (target 0): |frames emitted + slots the clock skipped (``late_frames``, each
  recorded as the held picture) - frames in the recording| + frames missing
  between the recording's first and last video timestamp + whole frames of audio missing from the recording
  (its video duration minus its audio duration, in frames, rounded down).

Writes ``soak.json`` (config, machine, source, command, samples, rows, the final stats, the recording and the
summary) and ``soak.md`` (a row per interval and the targets) into ``--out``. SIGINT (Ctrl-C), SIGTERM or SIGHUP
to this benchmark end the soak early: the child is stopped with SIGTERM as planned and the results are written,
marked as ended early.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from benchmarks.machine import machine_info
from fada_rt.assets import example_audio
from fada_rt.live import LIVE_MAX_LATENCY
from fada_rt.media import SAMPLE_RATE, probe_video, read_audio, write_wav
from fada_rt.outputs import StopSignals, signal_name

MB = 2**20
SILENCES = (2.0, 8.0, 20.0)  # seconds of silence after each pass of the example speech, in turn
SOURCE_MARGIN_S = 120.0  # source audio beyond the planned run: the file must not end before the SIGTERM
STARTUP_TIMEOUT_S = 300.0  # for the live process's first report (model load)
STOP_TIMEOUT_S = 120.0  # for the live process to finalise its recording after SIGTERM
EXPECTED_EXIT = 128 + signal.SIGTERM  # 143
RSS_SLOPE_MAX = 1.0  # MB/min
AV_OFFSET_MAX_MS = 40.0
ROW_TAIL_S = 2.0  # a last stretch shorter than this joins the row before it


class SoakNotStarted(RuntimeError):
    """A stop signal came before the live loop ran: nothing to write."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal_name(signum)} before the live loop ran; nothing written")
        self.signum = signum


@dataclass(frozen=True)
class SoakConfig:
    minutes: float  # of live loop, from its first report to the SIGTERM
    interval: float = 60.0  # seconds per row
    sample_every: float = 5.0  # seconds between psutil samples
    speed: float = 1.0  # pace of the source (see the module doc: the live clock stays real time)
    max_latency: float = LIVE_MAX_LATENCY
    live_args: tuple[str, ...] = ()  # more options for fada_rt.live (e.g. --threads 1, --sampler stream)
    silences: tuple[float, ...] = SILENCES

    def __post_init__(self) -> None:
        if not self.minutes > 0:
            raise ValueError(f"--minutes must be > 0, got {self.minutes}")
        if not self.interval > 0 or not self.sample_every > 0:
            raise ValueError(f"--interval and --sample-every must be > 0, got {self.interval}, {self.sample_every}")
        if self.sample_every > self.interval / 2:
            raise ValueError(f"--sample-every {self.sample_every} s leaves fewer than two samples per "
                             f"--interval {self.interval} s; sample more often")
        if not self.speed > 0:
            raise ValueError(f"--speed must be > 0, got {self.speed}")
        if not self.silences or min(self.silences) < 0:
            raise ValueError(f"silences must be one or more seconds >= 0, got {self.silences}")


# ---- the source ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    path: str
    seconds: float
    speech_seconds: float
    passes: int  # of the example speech
    pattern: str


def make_source(*, path: Path, seconds: float, silences: Sequence[float] = SILENCES) -> Source:
    """The example speech, then ``silences[0]`` s of silence, the speech, ``silences[1]`` s, ... (cycling) until
    at least ``seconds``; a 16-bit wav at :data:`~fada_rt.media.SAMPLE_RATE`."""
    speech = read_audio(example_audio())
    parts, total, passes = [], 0, 0
    while total < seconds * SAMPLE_RATE:
        gap = np.zeros(round(silences[passes % len(silences)] * SAMPLE_RATE), np.float32)
        parts += [speech, gap]
        total += speech.size + gap.size
        passes += 1
    write_wav(path, np.concatenate(parts))
    speech_s = speech.size / SAMPLE_RATE
    cycle = len(silences) * speech_s + sum(silences)
    pattern = (f"{example_audio().name} ({speech_s:.1f} s of speech) repeated, with "
               f"{', '.join(f'{s:g}' for s in silences)} s of silence after the passes in turn "
               f"({len(silences) * speech_s / cycle:.0%} speech); {passes} passes, {total / SAMPLE_RATE:.0f} s")
    return Source(path=str(path), seconds=total / SAMPLE_RATE, speech_seconds=passes * speech_s, passes=passes,
                  pattern=pattern)


# ---- watching the process ------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    wall: float  # time.time()
    rss_mb: float
    fds: int  # open descriptors of every kind
    open_files: int  # regular files among them
    threads: int
    cpu_s: float  # user + system CPU seconds so far
    load1: float  # the machine's 1-minute load average


def sample_process(process: psutil.Process) -> Sample | None:
    """One look at ``process``; None once it has exited."""
    try:
        with process.oneshot():
            cpu = process.cpu_times()
            return Sample(wall=time.time(), rss_mb=process.memory_info().rss / MB, fds=process.num_fds(),
                          open_files=len(process.open_files()), threads=process.num_threads(),
                          cpu_s=cpu.user + cpu.system, load1=os.getloadavg()[0])
    except psutil.NoSuchProcess:  # gone, or a zombie not yet reaped
        return None


class JsonlTail:
    """The objects of a JSON-lines file that another process appends to, complete lines only."""

    def __init__(self, path: Path) -> None:
        self.path, self.records, self._offset = path, [], 0

    def poll(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        new = [json.loads(line) for line in data[:end].decode().splitlines() if line.strip()]
        self.records += new
        return new


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
                    # emitted frames + the skipped slots the recording holds the picture for, minus the recorded
                    "unrecorded_frames": max(r["frames"] + r.get("late_frames", 0) - r.get("recorded_frames",
                                                                                           r["frames"] + r.get("late_frames", 0))
                                             for r in rep)}
        rows.append(row)
    return rows


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
    """Decode every frame (:func:`~fada_rt.media.probe_video`) and check the video timestamps."""
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


# ---- the run ---------------------------------------------------------------------------------------


def live_command(*, source: Path, record: Path, jsonl: Path, config: SoakConfig) -> list[str]:
    return [sys.executable, "-m", "fada_rt.live", "--audio-file", str(source), "--no-preview", "--record",
            str(record), "--overwrite", "--stats-jsonl", str(jsonl), "--speed", f"{config.speed:g}",
            "--max-latency", f"{config.max_latency:g}", *config.live_args]


def stop_child(child: subprocess.Popen[bytes], *, timeout: float = STOP_TIMEOUT_S) -> tuple[int, bool]:
    """SIGTERM (the live process finalises its recording), SIGKILL after ``timeout`` s: (exit code, killed)."""
    child.send_signal(signal.SIGTERM)
    try:
        return child.wait(timeout=timeout), False
    except subprocess.TimeoutExpired:
        child.kill()
        return child.wait(), True


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else "(no log)"


def say_now(line: str) -> None:
    print(line, flush=True)  # a background run's log shows each line as it comes


def run_soak(*, config: SoakConfig, out: Path, work: Path | None = None, keep_work: bool = False,
             progress: Callable[[str], None] | None = say_now) -> dict[str, Any]:
    """Run the soak (the module doc), write ``soak.json`` and ``soak.md`` into ``out``, return the results.

    ``work``: where the source, the recording and the live process's log and reports go (default: a new
    temporary folder, removed at the end unless ``keep_work``; a given folder is kept)."""
    say = progress or (lambda line: None)
    out.mkdir(parents=True, exist_ok=True)
    temporary = work is None
    work = Path(tempfile.mkdtemp(prefix="fada-soak-")) if work is None else work  # ~3 MB a minute (source, video)
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _run(config=config, out=out, work=work.absolute(), say=say)
    finally:
        if temporary and not keep_work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"work folder kept: {work}")


def _run(*, config: SoakConfig, out: Path, work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    source = make_source(path=work / "source.wav", seconds=config.minutes * 60 * config.speed + SOURCE_MARGIN_S,
                         silences=config.silences)
    record, jsonl, log_path = work / "soak.mp4", work / "live.jsonl", work / "live.log"
    command = live_command(source=Path(source.path), record=record, jsonl=jsonl, config=config)
    say(f"soak: {config.minutes:g} min of the live loop, a row every {config.interval:g} s; source: {source.pattern}")
    say("live: " + shlex.join(command))
    machine = machine_info(device=torch.device("cpu"))
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    samples: list[Sample] = []

    def look(process: psutil.Process) -> bool:
        """Sample ``process``; False when it has exited."""
        sample = sample_process(process)
        if sample is not None:
            samples.append(sample)
        return sample is not None

    tail = JsonlTail(jsonl)
    ended, stop_signal, exit_code, t0, stop = "planned", None, None, None, None
    with StopSignals() as signals, log_path.open("w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=work, start_new_session=True)
        try:
            process = psutil.Process(child.pid)
            launched = time.time()
            while t0 is None:  # the model loads; the soak starts with the first report
                if child.poll() is not None:
                    raise RuntimeError(f"the live process exited ({child.returncode}) before its first report; "
                                       f"its log ({log_path}):\n{_tail(log_path)}")
                if time.time() - launched > STARTUP_TIMEOUT_S:
                    raise RuntimeError(f"no report from the live process within {STARTUP_TIMEOUT_S:g} s; its log "
                                       f"({log_path}):\n{_tail(log_path)}")
                if signals.event.wait(0.2):
                    raise SoakNotStarted(signals.signum or signal.SIGINT)
                if not samples or time.time() - samples[-1].wall >= config.sample_every:
                    look(process)
                if tail.poll():
                    t0 = tail.records[0]["wall"]
            say(f"live loop running after {t0 - launched:.1f} s (model load); pid {child.pid}, work {work}")
            planned_end, printed = t0 + config.minutes * 60, 0
            while True:
                now = time.time()
                if now >= planned_end:
                    break
                if signals.event.wait(min(config.sample_every, planned_end - now)):
                    ended, stop_signal = f"early: {signals.name} to the benchmark", signals.signum
                    break
                if not look(process) or child.poll() is not None:
                    ended = f"early: the live process exited by itself ({child.wait()})"
                    break
                tail.poll()
                while t0 + (printed + 1) * config.interval < min(samples[-1].wall, planned_end - ROW_TAIL_S):
                    a = t0 + printed * config.interval
                    row = make_rows(samples=samples, records=tail.records, edges=[t0, a, a + config.interval])[-1]
                    row["row"] = printed + 1
                    say(format_row(row))
                    printed += 1
            if child.poll() is None and look(process):
                stop = time.time()
                exit_code, killed = stop_child(child)
                if killed:
                    ended += f"; no exit {STOP_TIMEOUT_S:g} s after SIGTERM: killed"
            else:
                stop, exit_code = samples[-1].wall, child.wait()
        finally:
            if child.poll() is None:  # an error, or a stop signal during the model load
                stop_child(child)
    tail.poll()
    edges = row_edges(t0=t0, stop=stop, interval=config.interval)
    rows = make_rows(samples=samples, records=tail.records, edges=edges)
    for row in rows[printed:]:
        say(format_row(row))
    final = next((r for r in reversed(tail.records) if r.get("kind") == "final"), None)
    recording = check_recording(record) if record.is_file() else None
    if recording is None:
        say(f"no recording at {record}; the live process's log:\n{_tail(log_path)}")
    results = {
        "config": dataclasses.asdict(config), "started": started, "ended": ended,
        "stop_signal": None if stop_signal is None else signal_name(stop_signal),
        "soak_seconds": round(stop - t0, 1), "startup_seconds": round(t0 - launched, 1),
        "command": shlex.join(command), "model": _model_line(log_path), "machine": machine,
        "source": dataclasses.asdict(source), "rows": rows, "final": final,
        "recording": None if recording is None else dataclasses.asdict(recording) | {
            "playable": recording.playable, "audio_short_frames": recording.audio_short_frames},
        "summary": assess(rows=rows, final=final, exit_code=exit_code, recording=recording),
        "samples": [dataclasses.asdict(s) for s in samples],
    }
    (out / "soak.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "soak.md").write_text(to_markdown(results) + "\n")
    say(summary_text(results))
    say(f"wrote {out / 'soak.json'} and {out / 'soak.md'}")
    return results


def _model_line(log_path: Path) -> str | None:
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("model: "):
            return line.removeprefix("model: ").split("; Ctrl-C")[0]
    return None


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
             "slips (both called for by the clock); CPU in % of one core; load: the machine's 1-minute load.", "",
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


# ---- CLI -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=(
        "Soak: python -m fada_rt.live from a file source for --minutes, its RSS, descriptors, threads, A/V offset "
        "and latency per interval, then SIGTERM and the recording checked (benchmarks/soak.py)."))
    p.add_argument("--minutes", type=float, required=True, help="minutes of live loop (real time: see --speed)")
    p.add_argument("--out", default="benchmarks/results/soak", help="folder for soak.json and soak.md "
                   "(default: %(default)s)")
    p.add_argument("--interval", type=float, default=60.0, help="seconds per row (default: %(default)s)")
    p.add_argument("--sample-every", type=float, default=5.0, help="seconds between looks at the process "
                   "(default: %(default)s)")
    p.add_argument("--speed", type=float, default=1.0, help="pace of the source; the live output clock stays real "
                   "time, so above 1 the surplus speech is skipped (default: %(default)s)")
    p.add_argument("--max-latency", type=float, default=LIVE_MAX_LATENCY, help="fada_rt.live --max-latency "
                   "(default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="fada_rt.live --threads (default: the libraries' choice)")
    p.add_argument("--live-args", default="", help="more fada_rt.live options, one shell-quoted string, e.g. "
                   "\"--sampler stream --decoder tiny\" (default: none)")
    p.add_argument("--work", default=None, help="folder for the source, recording and the live log (default: a "
                   "temporary folder, removed at the end)")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary work folder")
    args = p.parse_args(argv)
    live_args = tuple(shlex.split(args.live_args))
    if args.threads is not None:
        live_args += ("--threads", str(args.threads))
    try:
        config = SoakConfig(minutes=args.minutes, interval=args.interval, sample_every=args.sample_every,
                            speed=args.speed, max_latency=args.max_latency, live_args=live_args)
    except ValueError as err:
        p.error(str(err))
    try:
        results = run_soak(config=config, out=Path(args.out), work=None if args.work is None else Path(args.work),
                           keep_work=args.keep_work)
    except SoakNotStarted as err:
        print(f"soak not run: {err}", file=sys.stderr)
        return 128 + err.signum
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    stopped = results["stop_signal"]
    return 0 if stopped is None else 128 + signal.Signals[stopped].value


if __name__ == "__main__":
    sys.exit(main())
