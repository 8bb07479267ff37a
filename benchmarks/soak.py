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
import json
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
from benchmarks.soak_report import (
    MB,
    ROW_TAIL_S,
    Sample,
    assess,
    check_recording,
    format_row,
    make_rows,
    row_edges,
    summary_text,
    to_markdown,
)
from fada_rt.assets import example_audio
from fada_rt.live import LIVE_MAX_LATENCY
from fada_rt.media import SAMPLE_RATE, read_audio, write_wav
from fada_rt.outputs import StopSignals, signal_name

SILENCES = (2.0, 8.0, 20.0)  # seconds of silence after each pass of the example speech, in turn
SOURCE_MARGIN_S = 120.0  # source audio beyond the planned run: the file must not end before the SIGTERM
STARTUP_TIMEOUT_S = 300.0  # for the live process's first report (model load)
STOP_TIMEOUT_S = 120.0  # for the live process to finalise its recording after SIGTERM


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
