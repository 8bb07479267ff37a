"""``python -m fada_rt.live``: a portrait driven live by a microphone or a file (docs/design.md §4).

Sources: the microphone through sounddevice (optional extra ``live``; Linux needs PortAudio,
``apt-get install libportaudio2``), or ``--audio-file F`` paced in real time (``--speed``), which
needs no sounddevice; the run ends when the file does. Audio goes into a
:class:`~fada_rt.api.StreamingAvatar` (features computed incrementally with bounded look-ahead; speech
that waits longer than ``--max-latency`` is skipped unmade); frames come paced at the model's fps, each
with the audio that plays with it. They go to the preview page on 127.0.0.1 (``--no-preview`` to skip) and
to ``--record OUT.mp4``, whose picture and sound are the emitted frames and their audio, so they stay
aligned. ``--record`` is checked before the model loads (:func:`fada_rt.outputs.check_output`) and written
to ``.NAME.partial.mp4``, renamed onto it when closed: SIGINT, SIGTERM and SIGHUP (read between frames) end
the run like the end of the source, the recording plays, and the exit code is ``128 + signum``. The report
mentions a recording only when one was written. Latency and A/V offset: :class:`FrameTimer`.
``--stats-jsonl F`` also writes the reports as JSON lines (:class:`~fada_rt.preview.StatsLog`).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fada_rt.api import AvatarFrame, StreamingAvatar
from fada_rt.face import CropMode, OutputMode
from fada_rt.live_sources import FileSource, LiveInputError, MicrophoneSource
from fada_rt.media import SAMPLE_RATE
from fada_rt.outputs import StopSignals, check_output, signal_name
from fada_rt.pipeline import AvatarPipeline
from fada_rt.preview import FrameTimer, PreviewServer, StatsLog
from fada_rt.video_out import VideoWriter

DESCRIPTION = ("A portrait driven live by the microphone (or --audio-file paced in real time), with a preview "
               "page on 127.0.0.1 and an optional --record OUT.mp4.")
LIVE_MAX_LATENCY = 1.0  # seconds of speech allowed to wait; more is skipped unmade (a model slower than real time)
LIVE_MAX_SIDE = 1280  # full frames are pasted and sent 25 times a second: larger pictures are downscaled to this
# ---- recording ------------------------------------------------------------------------------------


class LiveRecorder:
    """CFR mp4 of the live stream on its clock: every emitted frame with the audio that plays with it, and the slots
    the model missed (``late_frames``) as a viewer saw them, the last picture held in silence."""

    def __init__(self, path: str | Path, *, size: int | tuple[int, int], fps: int, sample_rate: int) -> None:
        self.writer = VideoWriter(path, size=size, fps=fps, sample_rate=sample_rate)
        self.held = 0  # slots filled with the last picture
        self._first: int | None = None
        self._last: AvatarFrame | None = None

    def write(self, frame: AvatarFrame) -> None:
        self._first = frame.index if self._first is None else self._first
        while self._last is not None and self.writer.frames_written < frame.index - self._first:
            self.writer.write_audio(np.zeros_like(self._last.audio))
            self.writer.write_frames(self._last.image[None])
            self.held += 1
        self.writer.write_audio(frame.audio)
        self.writer.write_frames(frame.image[None])
        self._last = frame

    def close(self) -> None:
        self.writer.close()


# ---- the loop -------------------------------------------------------------------------------------


@dataclass
class LiveResult:
    frames: int
    stats: dict[str, Any]
    recorded_frames: int | None  # frames in the recording (None: no --record)
    interrupted: bool  # stopped by a signal
    signal: int | None = None  # the signal that stopped the run
    recording: Path | None = None  # the recording, when one was written (it has frames)

    @property
    def exit_code(self) -> int:
        return 0 if self.signal is None else 128 + self.signal


def run_live(
    *,
    pipeline: AvatarPipeline,
    image: str | Path | np.ndarray,
    source: MicrophoneSource | FileSource,
    record: str | Path | None = None,
    preview: bool = True,
    port: int = 8765,
    output: OutputMode = "full",
    crop: CropMode = "face",
    face_index: int | None = None,
    max_side: int | None = LIVE_MAX_SIDE,
    size: int = 256,
    max_latency: float | None = LIVE_MAX_LATENCY,
    seed: int = 0,
    stop: threading.Event | None = None,
    duration: float | None = None,
    on_frame: Callable[[np.ndarray, float], None] | None = None,
    report: Callable[[dict[str, Any]], None] | None = None,
    report_every: float = 1.0,
    overwrite: bool = False,
) -> LiveResult:
    """Run until the source ends, ``duration`` seconds of audio were rendered, ``stop`` is set or a signal
    (SIGINT, SIGTERM, SIGHUP; on the main thread) comes.

    ``output``/``crop``/``face_index``/``max_side``: the portrait (docs/portraits.md); ``size``: the preview's
    long side, and with ``output="crop"`` the recording's size (full recordings have the picture's size).
    ``record`` is checked first (:func:`~fada_rt.outputs.check_output`; an existing file is replaced only with
    ``overwrite``). ``report`` gets the stats every ``report_every`` seconds, :class:`FrameTimer`'s over that
    interval; the result's are over the run."""
    if record is not None:
        record = check_output(record, inputs=(image, getattr(source, "path", None)), overwrite=overwrite,
                              flag="--record")
    with contextlib.ExitStack() as cleanup:  # closed in reverse: the source first, the signal handlers last
        signals = cleanup.enter_context(StopSignals())  # a signal sets a flag the loop reads between frames
        avatar = cleanup.enter_context(StreamingAvatar(
            image, pipeline=pipeline, seed=seed, realtime=source.realtime, output=output, crop=crop,
            face_index=face_index, max_side=max_side, max_latency=max_latency if source.realtime else None))
        if avatar.portrait.note:
            print(avatar.portrait.note, flush=True)
        if avatar.portrait.faces:
            print(avatar.portrait.describe_faces(), flush=True)
        if isinstance(source, FileSource) and source.speed is None:
            source.backlog = avatar.buffered_seconds
        server = None
        if preview:
            server = cleanup.enter_context(PreviewServer(port=port, size=size, delay=0.0))
            print(f"preview: {server.url}", flush=True)
        recorder = None
        if record is not None:
            recorder = LiveRecorder(record, size=avatar.portrait.size if output == "full" else size, fps=avatar.fps,
                                    sample_rate=avatar.audio_rate)
            cleanup.callback(recorder.close)

        def stopping() -> bool:
            return signals.event.is_set() or (stop is not None and stop.is_set())

        clock, timer = avatar.clock, FrameTimer()
        frames, last_report = 0, clock()
        source.start(lambda samples: avatar.push_audio(samples, SAMPLE_RATE), avatar.end_audio)
        cleanup.callback(source.stop)
        while True:
            try:
                frame = avatar.next_frame(timeout=0.25)
            except TimeoutError:  # no audio yet: look at the stop flags, wait again
                if stopping():
                    break
                continue
            if frame is None:  # the source ended and every frame is out
                break
            frames += 1
            timer.add(pts=frame.pts, emitted=clock(), captured_at=frame.captured_at)
            if recorder is not None:
                recorder.write(frame)
            if server is not None:  # on the avatar's clock
                server.update(frame.image, frame.pts, _live_stats(avatar.stats, timer.stats(), recorder))
            if on_frame is not None:
                on_frame(frame.image, frame.pts)
            if report is not None and clock() - last_report >= report_every:
                report(_live_stats(avatar.stats, timer.stats(reset=True), recorder))
                last_report = clock()
            if stopping() or (duration is not None and frame.pts >= duration):
                break
    if getattr(source, "error", None) is not None:
        raise source.error
    written = recorder is not None and recorder.writer.written
    return LiveResult(frames=frames, stats=_live_stats(avatar.stats, timer.stats(total=True), recorder),
                      interrupted=signals.signum is not None, signal=signals.signum,
                      recorded_frames=recorder.writer.frames_written if recorder is not None else None,
                      recording=record if written else None)


def _live_stats(stats: dict[str, Any], timing: dict[str, float | None], recorder: LiveRecorder | None
                ) -> dict[str, Any]:
    """The avatar's stats with :class:`FrameTimer`'s latency and A/V offset in place of its run-long latency."""
    out = {**stats, **timing}
    if recorder is not None:
        out["recorded_frames"] = recorder.writer.frames_written
    return out


def format_stats(stats: dict[str, Any]) -> str:
    def ms(name: str) -> str:
        last, mean, peak = (stats.get(f"{name}_ms_{k}") for k in ("last", "mean", "max"))
        return "-" if last is None else f"{last:.0f} ms (mean {mean:.0f}, max {peak:.0f})"

    return " | ".join([f"frames {stats['frames']}", f"fps {stats['fps']:.1f}", f"RTF {stats['rtf']:.2f}",
                       f"latency {ms('latency')}", f"A/V offset {ms('av_offset')}",
                       f"dropped {stats['dropped_frames']}", f"speech queued {stats['pending_seconds']:.1f} s"])


def _report(stats: dict[str, Any], log: StatsLog | None) -> None:
    print(format_stats(stats), flush=True)
    if log is not None:
        log.write(stats)


# ---- CLI ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from fada_rt.generate import add_model_args, add_portrait_args

    p = argparse.ArgumentParser(prog="python -m fada_rt.live", description=DESCRIPTION,
                                epilog="Stats: fps = frames made per wall-clock second; RTF = compute seconds per "
                                       "second of video made (lower is better; below 1 keeps up with real time).")
    p.add_argument("--image", default=None, help="portrait image (default: fada_rt/examples/face.png)")
    p.add_argument("--audio-file", default=None, help="use this audio file as the source, paced in real time "
                   "(no microphone or sounddevice needed); the run ends with the file")
    p.add_argument("--speed", type=float, default=1.0, help="pace of --audio-file relative to real time "
                   "(default: %(default)s)")
    p.add_argument("--input-device", default=None, help="sounddevice input device (index or name substring)")
    p.add_argument("--record", default=None, help="also write the stream to this .mp4 (H.264 + AAC); written to "
                   ".NAME.partial.mp4 beside it and renamed when closed")
    p.add_argument("--overwrite", action="store_true", help="replace --record if it exists (default: refuse)")
    p.add_argument("--no-preview", action="store_true", help="do not serve the preview page")
    p.add_argument("--port", type=int, default=8765, help="preview port on 127.0.0.1 (default: %(default)s; 0: any "
                   "free port)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds of audio")
    p.add_argument("--max-latency", type=float, default=LIVE_MAX_LATENCY, help="seconds of speech allowed to wait "
                   "for the model; more is skipped unmade, so a model slower than real time stays live "
                   "(default: %(default)s)")
    p.add_argument("--size", type=int, default=256, help="preview size (long side) in px; with --output crop also the "
                   "recording's, even (default: %(default)s)")
    add_portrait_args(p, max_side=LIVE_MAX_SIDE)
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise (default: %(default)s)")
    p.add_argument("--stats-jsonl", default=None, help="also write each report and the final stats to this file, one "
                   "JSON object a line (default: off)")
    add_model_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    from fada_rt.assets import example_image
    from fada_rt.backends import BackendUnavailable
    from fada_rt.generate import pipeline_from_args

    args = build_parser().parse_args(argv)
    try:
        image = args.image if args.image is not None else example_image()
        if args.record is not None:  # before the microphone opens and the model loads
            check_output(args.record, inputs=(image, args.audio_file), overwrite=args.overwrite, flag="--record")
        log = StatsLog(args.stats_jsonl) if args.stats_jsonl is not None else None
        if args.audio_file is not None:
            source: MicrophoneSource | FileSource = FileSource(args.audio_file, speed=args.speed)
        else:
            device = int(args.input_device) if args.input_device and args.input_device.isdigit() else args.input_device
            source = MicrophoneSource(device=device)
            print(f"microphone: {source.name} at {source.rate} Hz", flush=True)
        pipeline = pipeline_from_args(args, call=True)
        steps = (f"{pipeline.nfe} NFE per frame, frames in flight" if pipeline.rolling
                 else f"{pipeline.nfe} NFE per chunk of {pipeline.chunk_frames} frames")
        print(f"model: {pipeline.config.preset}, sampler {pipeline.sampler.name} ({steps}); Ctrl-C to stop", flush=True)
        result = run_live(pipeline=pipeline, image=image, source=source, record=args.record,
                          preview=not args.no_preview, port=args.port, output=args.output, crop=args.crop,
                          face_index=args.face_index, max_side=args.max_side, size=args.size,
                          max_latency=args.max_latency, seed=args.seed, overwrite=args.overwrite,
                          duration=args.duration, report=lambda s: _report(s, log))
    except (LiveInputError, ValueError, FileExistsError, FileNotFoundError, BackendUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the live loop started (model loading)
        print("interrupted", file=sys.stderr)
        return 130
    ended = "done" if result.signal is None else f"stopped by {signal_name(result.signal)}"
    print(f"{ended}; " + format_stats(result.stats), flush=True)
    if log is not None:
        log.write(result.stats, kind="final", emitted=result.frames, exit_code=result.exit_code,
                  recording=None if result.recording is None else str(result.recording))
    if result.recording is not None:
        n = result.recorded_frames or 0
        print(f"recording: {result.recording} ({n} frames, {n / pipeline.config.audio.fps:.2f} s)", flush=True)
    elif args.record is not None:
        print(f"no recording written to {args.record}: no frame was emitted", flush=True)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
