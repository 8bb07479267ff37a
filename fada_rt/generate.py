"""``python -m fada_rt.generate``: one portrait + speech audio -> an H.264 + AAC mp4 (docs/design.md §4).

With only ``--out`` it runs the embedded default (the shipped tiny student on ``fada_rt/examples/face.png``
and ``fada_rt/examples/speech.wav``, see :mod:`fada_rt.assets`). Audio in any format PyAV reads, any rate
and channel count, is decoded at the model's sample rate and generated chunk by chunk (memory does not
grow with its length; ``--max-duration`` guards against accidentally huge inputs) through the same
:class:`~fada_rt.streaming.StreamingSession` the live runtime uses. The video runs at the model's fps and
has exactly ``ceil(S / samples_per_frame)`` frames for ``S`` samples (the model's ``AudioConfig``); the
audio track is the input, trimmed to the video.

The output is checked before the model loads (:func:`fada_rt.outputs.check_output`: not a directory, not an
input, a video extension, a writable place, no existing file unless ``--overwrite``) and written to
``.NAME.partial.mp4`` beside it, renamed onto it when finalised. A run stopped by SIGINT, SIGTERM or SIGHUP
(read between chunks) or failing still finalises the file, so the frames written so far play at the target
path (none: no file); a signal exits with ``128 + signum``. The summary reports the real-time factor,
RTF = wall-clock seconds / seconds of video (lower is better; below 1 is faster than real time), and the
frames made per second.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fada_rt.backends import BackendUnavailable, add_load_options, load_options_from_args
from fada_rt.face import CROP_MODES, MAX_SIDE, OUTPUT_MODES, CropMode, OutputMode, Portrait
from fada_rt.media import iter_audio, probe_audio
from fada_rt.outputs import StopSignals, check_output
from fada_rt.pipeline import AvatarPipeline
from fada_rt.sampling import DISTILLED_CFG_R, SAMPLERS, TEACHER_CFG_A, TEACHER_CFG_R
from fada_rt.streaming import ChunkOutput, StreamingSession
from fada_rt.video_out import VideoWriter

DESCRIPTION = ("One portrait + speech audio -> an H.264 + AAC mp4. With only --out: the embedded default "
               "(the shipped tiny student on fada_rt/examples/face.png and fada_rt/examples/speech.wav).")
log = logging.getLogger(__name__)
SILENCE_PEAK = 1e-4  # below this peak amplitude the audio is reported as silent


@dataclass(frozen=True)
class GenerateResult:
    path: Path
    frames: int
    video_seconds: float  # frames / the model's fps
    audio_seconds: float
    wall_seconds: float
    nfe_per_chunk: int
    silent: bool
    stopped: bool = False  # ``stop`` was set: the file has the frames made until then (none: no file)

    @property
    def rtf(self) -> float:
        """Real-time factor: wall-clock seconds per second of video (lower is better; < 1: faster than real time)."""
        return self.wall_seconds / self.video_seconds if self.video_seconds > 0 else math.inf

    @property
    def fps(self) -> float:
        """Frames made per wall-clock second."""
        return self.frames / self.wall_seconds if self.wall_seconds > 0 else math.inf


def default_size(resolution: int) -> int:
    """Output size: the model's frames, upscaled to at least 256 px for viewing."""
    return max(256, resolution)


def generate_video(
    *,
    pipeline: AvatarPipeline,
    image: str | Path | np.ndarray | Portrait,
    audio: str | Path,
    out: str | Path,
    output: OutputMode = "full",
    crop: CropMode = "face",
    face_index: int | None = None,
    max_side: int | None = MAX_SIDE,
    size: int | None = None,
    seed: int = 0,
    max_duration: float | None = 600.0,
    progress: bool = True,
    on_chunk: Callable[[ChunkOutput], None] | None = None,
    overwrite: bool = False,
    stop: threading.Event | None = None,
) -> GenerateResult:
    """Generate ``out`` from ``image`` and ``audio``; see the module docstring.

    ``output="full"``: the whole picture at its size (up to ``max_side``) with the face pasted back;
    ``"crop"``: the model's face crop, upscaled to ``size``. ``crop``/``face_index``: how the face is found
    (:meth:`AvatarPipeline.portrait`); an already loaded :class:`~fada_rt.face.Portrait` skips that.

    ``max_duration`` (seconds; None or 0 for no limit) is checked against the container's metadata
    before anything is generated, and again while decoding. ``out`` is checked first
    (:func:`~fada_rt.outputs.check_output`; an existing file is replaced only with ``overwrite``).
    ``stop``: when set (read between chunks) the run ends early with the frames made so far, ``stopped=True``.
    """
    start = time.monotonic()
    out = check_output(out, inputs=(image, audio), overwrite=overwrite)
    if output not in OUTPUT_MODES:
        raise ValueError(f"unknown output {output!r}; expected one of {OUTPUT_MODES}")
    portrait = image if isinstance(image, Portrait) else pipeline.portrait(
        image, crop=crop, face_index=face_index, max_side=max_side)  # image errors come before any output exists
    if portrait.note:
        log.info("%s", portrait.note)
    if portrait.faces:
        log.info("%s", portrait.describe_faces())
    avatar = pipeline.prepare(portrait)
    info = probe_audio(audio)
    limit = max_duration or None
    if limit is not None and info.duration is not None and info.duration > limit:
        raise ValueError(f"{audio} is {info.duration:.1f} s long, over --max-duration {limit:g} s; pass "
                         f"--max-duration {math.ceil(info.duration)} (or 0 for no limit) to generate all of it")
    rate, fps = pipeline.config.audio.sample_rate, pipeline.config.audio.fps
    blocks = iter_audio(audio, sample_rate=rate)
    first = next(blocks, None)
    if first is None:
        raise ValueError(f"{audio} contains no audio samples (empty audio); give a file with speech in it")
    # offline: the next chunk's steps run while this one decodes (measured faster: docs/experiments/2026-12-05-gpu-speed.md)
    session = StreamingSession(pipeline, avatar, generator=torch.Generator().manual_seed(seed), overlap_decode=True)
    expected = math.ceil(info.duration * fps) if info.duration else None
    bar = tqdm(total=expected, unit="frame", desc="generating", disable=not progress, dynamic_ncols=True)
    frame_size = portrait.size if output == "full" else (size or default_size(pipeline.resolution))
    writer = VideoWriter(out, size=frame_size, fps=fps, sample_rate=rate)
    peak = 0.0
    drain = functools.partial(_drain, session, writer, bar, on_chunk, portrait, output, stop)
    try:
        for block in itertools.chain([first], blocks):
            if stop is not None and stop.is_set():
                break
            if limit is not None and (session.features.total + block.size) / rate > limit:
                raise ValueError(f"{audio} is longer than --max-duration {limit:g} s; pass a larger "
                                 f"--max-duration (or 0 for no limit)")
            peak = max(peak, float(np.abs(block).max(initial=0.0)))
            session.push(block)
            writer.write_audio(block)
            if not drain():
                break
        else:
            session.finish()
            drain()
    except BaseException:
        _finalise_partial(writer)
        raise
    finally:
        bar.close()
        writer.close()
    silent = peak < SILENCE_PEAK
    if silent:
        log.warning("%s is silent (peak %.1e): the avatar keeps its mouth closed", audio, peak)
    return GenerateResult(path=out, frames=writer.frames_written, video_seconds=writer.duration,
                          audio_seconds=session.features.total / rate, wall_seconds=time.monotonic() - start,
                          nfe_per_chunk=pipeline.nfe, silent=silent, stopped=stop is not None and stop.is_set())


def _drain(session: StreamingSession, writer: VideoWriter, bar: tqdm, on_chunk: Callable[[ChunkOutput], None] | None,
           portrait: Portrait, output: OutputMode, stop: threading.Event | None) -> bool:
    """Write the chunks that are ready; False when ``stop`` was set (read after each chunk)."""
    while (chunk := session.step()) is not None:
        writer.write_frames(np.stack([portrait.frame(f, output) for f in chunk.frames]))
        bar.update(len(chunk.frames))
        if on_chunk is not None:
            on_chunk(chunk)
        if stop is not None and stop.is_set():
            return False
    return stop is None or not stop.is_set()


def _finalise_partial(writer: VideoWriter) -> None:
    """On an error or Ctrl-C: close the file, so what was written plays at the target (no frames: no file)."""
    writer.close()
    if writer.written:
        log.warning("partial video written: %s (%d frames, %.2f s)", writer.path, writer.frames_written,
                    writer.duration)


# ---- CLI ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fada_rt.generate", description=DESCRIPTION)
    p.add_argument("--out", required=True, help="output video (.mp4): H.264 + AAC; written to .NAME.partial.mp4 "
                   "beside it and renamed when complete")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: refuse)")
    p.add_argument("--image", default=None, help="portrait image, any size (default: fada_rt/examples/face.png); the "
                   "face is found and aligned (see --crop)")
    p.add_argument("--audio", default=None, help="speech audio in any format PyAV reads, any rate/channels "
                   "(default: fada_rt/examples/speech.wav)")
    add_portrait_args(p, max_side=MAX_SIDE)
    p.add_argument("--size", type=int, default=None, help="with --output crop: video size in px, even (default: "
                   "max(256, model resolution); frames are upscaled bicubically)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise (default: %(default)s)")
    p.add_argument("--max-duration", type=float, default=600.0, help="refuse audio longer than this many "
                   "seconds (default: %(default)s; 0: no limit)")
    p.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    add_model_args(p)
    return p


def add_portrait_args(p: argparse.ArgumentParser, *, max_side: int | None) -> None:
    """The portrait flags of generate and live (docs/portraits.md)."""
    g = p.add_argument_group("portrait")
    g.add_argument("--output", choices=OUTPUT_MODES, default="full", help="full: the whole picture with the face "
                   "pasted back; crop: the model's face crop alone (default: %(default)s)")
    g.add_argument("--crop", choices=CROP_MODES, default="face", help="face: find the face and align it to the model's "
                   "framing; centre: the centre square, for pictures already framed like the training images "
                   "(default: %(default)s)")
    g.add_argument("--face-index", type=int, default=None, help="which face when there are several, by the printed "
                   "list (default: the largest)")
    g.add_argument("--max-side", type=int, default=max_side, help="downscale pictures larger than this many px on "
                   "the long side; the full output has that size (default: %(default)s)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The sampler flags and the model-loading flags (:func:`fada_rt.backends.add_load_options`) of generate and live."""
    g = p.add_argument_group("sampler")
    g.add_argument("--sampler", choices=tuple(SAMPLERS), default="fast", help=f"fast: CFG-distilled student, "
                   f"{SAMPLERS['fast'].nfe} NFE; stream: the streaming student with frames in flight (a frame out a few "
                   f"calls after its audio), {SAMPLERS['stream'].nfe} NFE; balanced: student with multi-CFG, "
                   f"{SAMPLERS['balanced'].nfe} NFE; teacher: trailing DDIM, {SAMPLERS['teacher'].nfe} NFE "
                   "(default: %(default)s)")
    g.add_argument("--cfg-audio", type=float, default=None, help="audio guidance scale cfg_a of Eq. 9 (default: the "
                   f"checkpoint's own, else the paper's {TEACHER_CFG_A:g}; 1 = no audio guidance)")
    g.add_argument("--cfg-ref", type=float, default=None, help="reference guidance scale cfg_r of Eq. 9 (default: the "
                   f"checkpoint's own, else the paper's: {DISTILLED_CFG_R:g} fast, {TEACHER_CFG_R:g} balanced/teacher)")
    add_load_options(p, checkpoint_help="student/teacher checkpoint folder (default: the shipped tiny checkpoint of "
                     "--sampler, fada_rt/assets/tiny-*)")


def pipeline_from_args(args: argparse.Namespace, *, call: bool = False) -> AvatarPipeline:
    """The pipeline of the flags of :func:`add_model_args`: their LoadOptions, built once, and the sampler.
    ``call``: the options of a running call (live, serve; :meth:`LoadOptions.for_a_call`)."""
    options = load_options_from_args(args)
    return AvatarPipeline.load(options.for_a_call() if call else options, sampler=args.sampler,
                               cfg_audio=args.cfg_audio, cfg_ref=args.cfg_ref)


def main(argv: list[str] | None = None) -> int:
    from fada_rt.assets import example_audio, example_image

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        image = args.image if args.image is not None else example_image()
        audio = args.audio if args.audio is not None else example_audio()
        check_output(args.out, inputs=(image, audio), overwrite=args.overwrite)  # before the model loads
        pipeline = pipeline_from_args(args)
        with StopSignals() as signals:  # SIGINT/SIGTERM/SIGHUP: finish the file, exit 128 + signum
            result = generate_video(pipeline=pipeline, image=image, audio=audio, out=args.out, output=args.output,
                                    crop=args.crop, face_index=args.face_index, max_side=args.max_side,
                                    size=args.size, seed=args.seed, max_duration=args.max_duration,
                                    progress=not args.no_progress, overwrite=args.overwrite, stop=signals.event)
    except KeyboardInterrupt:  # while the model loaded: nothing was written
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileExistsError, FileNotFoundError, BackendUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if result.stopped and signals.exit_code is not None:
        written = (f"partial video {result.path}: {result.frames} frames ({result.video_seconds:.2f} s)"
                   if result.frames else "no frame was made; no file written")
        print(f"stopped by {signals.name}: {written}", file=sys.stderr)
        return signals.exit_code
    print(f"wrote {result.path}: {result.frames} frames ({result.video_seconds:.2f} s), {result.nfe_per_chunk} NFE "
          f"per chunk, {result.wall_seconds:.1f} s: RTF {result.rtf:.2f} (wall / video seconds), {result.fps:.1f} fps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
