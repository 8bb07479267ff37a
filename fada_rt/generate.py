"""``python -m fada_rt.generate``: one portrait + speech audio -> an H.264 + AAC mp4 (DESIGN.md §4).

With only ``--out`` it runs the embedded default (the shipped tiny student on ``examples/face.png``
and ``examples/speech.wav``, see :mod:`fada_rt.assets`). Audio in any format PyAV reads, any rate
and channel count, is decoded and generated chunk by chunk (memory does not grow with its length;
``--max-duration`` guards against accidentally huge inputs) through the same
:class:`~fada_rt.streaming.StreamingSession` the live runtime uses. The video has exactly
``ceil(S / 640)`` frames for ``S`` samples at 16 kHz; the audio track is the input, trimmed to the
video. An interrupted or failing run still closes the file, so the frames written so far play.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fada_rt.backends import BACKENDS, BackendUnavailable
from fada_rt.media import SAMPLE_RATE, VideoWriter, iter_audio, probe_audio
from fada_rt.pipeline import SAMPLERS, AvatarPipeline
from fada_rt.streaming import ChunkOutput, StreamingSession

DESCRIPTION = ("One portrait + speech audio -> an H.264 + AAC mp4. With only --out: the embedded default "
               "(the shipped tiny student on examples/face.png and examples/speech.wav).")
log = logging.getLogger(__name__)
SILENCE_PEAK = 1e-4  # below this peak amplitude the audio is reported as silent


@dataclass(frozen=True)
class GenerateResult:
    path: Path
    frames: int
    audio_seconds: float
    wall_seconds: float
    nfe_per_chunk: int
    silent: bool

    @property
    def realtime_factor(self) -> float:
        """Seconds of video per wall-clock second."""
        return (self.frames / 25) / self.wall_seconds if self.wall_seconds > 0 else math.inf


def default_size(resolution: int) -> int:
    """Output size: the model's frames, upscaled to at least 256 px for viewing."""
    return max(256, resolution)


def generate_video(
    *,
    pipeline: AvatarPipeline,
    image: str | Path | np.ndarray,
    audio: str | Path,
    out: str | Path,
    size: int | None = None,
    seed: int = 0,
    max_duration: float | None = 600.0,
    progress: bool = True,
    on_chunk: Callable[[ChunkOutput], None] | None = None,
) -> GenerateResult:
    """Generate ``out`` from ``image`` and ``audio``; see the module docstring.

    ``max_duration`` (seconds; None or 0 for no limit) is checked against the container's metadata
    before anything is generated, and again while decoding.
    """
    start = time.monotonic()
    avatar = pipeline.prepare(image)  # image errors come before any output exists
    info = probe_audio(audio)
    limit = max_duration or None
    if limit is not None and info.duration is not None and info.duration > limit:
        raise ValueError(f"{audio} is {info.duration:.1f} s long, over --max-duration {limit:g} s; pass "
                         f"--max-duration {math.ceil(info.duration)} (or 0 for no limit) to generate all of it")
    blocks = iter_audio(audio)
    first = next(blocks, None)
    if first is None:
        raise ValueError(f"{audio} contains no audio samples (empty audio); give a file with speech in it")
    session = StreamingSession(pipeline, avatar, generator=torch.Generator().manual_seed(seed))
    expected = math.ceil(info.duration * pipeline.config.audio.fps) if info.duration else None
    bar = tqdm(total=expected, unit="frame", desc="generating", disable=not progress, dynamic_ncols=True)
    writer = VideoWriter(out, size=size or default_size(pipeline.resolution))
    peak = 0.0
    try:
        for block in itertools.chain([first], blocks):
            if limit is not None and (session.features.total + block.size) / SAMPLE_RATE > limit:
                raise ValueError(f"{audio} is longer than --max-duration {limit:g} s; pass a larger "
                                 f"--max-duration (or 0 for no limit)")
            peak = max(peak, float(np.abs(block).max(initial=0.0)))
            session.push(block)
            writer.write_audio(block)
            _drain(session, writer, bar, on_chunk)
        session.finish()
        _drain(session, writer, bar, on_chunk)
    except BaseException:
        _finalise_partial(writer)
        raise
    finally:
        bar.close()
        writer.close()
    silent = peak < SILENCE_PEAK
    if silent:
        log.warning("%s is silent (peak %.1e): the avatar keeps its mouth closed", audio, peak)
    return GenerateResult(path=Path(out), frames=writer.frames_written, audio_seconds=session.features.total /
                          SAMPLE_RATE, wall_seconds=time.monotonic() - start, nfe_per_chunk=pipeline.nfe,
                          silent=silent)


def _drain(session: StreamingSession, writer: VideoWriter, bar: tqdm,
           on_chunk: Callable[[ChunkOutput], None] | None) -> None:
    while (chunk := session.step()) is not None:
        writer.write_frames(chunk.frames)
        bar.update(len(chunk.frames))
        if on_chunk is not None:
            on_chunk(chunk)


def _finalise_partial(writer: VideoWriter) -> None:
    """On an error or Ctrl-C: close the file so what was written plays; remove it if it has no frames."""
    writer.close()
    if writer.frames_written:
        log.warning("partial video written: %s (%d frames, %.2f s)", writer.path, writer.frames_written,
                    writer.duration)
    else:
        writer.path.unlink(missing_ok=True)


# ---- CLI ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fada_rt.generate", description=DESCRIPTION)
    p.add_argument("--out", required=True, help="output video (.mp4): H.264 + AAC")
    p.add_argument("--image", default=None, help="portrait image (default: examples/face.png); centre-cropped "
                   "to a square on its short side, then resized to the model resolution")
    p.add_argument("--audio", default=None, help="speech audio in any format PyAV reads, any rate/channels "
                   "(default: examples/speech.wav)")
    add_model_args(p)
    p.add_argument("--size", type=int, default=None, help="output video size in px, even (default: max(256, "
                   "model resolution); frames are upscaled bicubically)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise (default 0)")
    p.add_argument("--max-duration", type=float, default=600.0, help="refuse audio longer than this many "
                   "seconds (default 600; 0: no limit)")
    p.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    return p


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Model/backend flags shared by generate and live."""
    p.add_argument("--checkpoint", default=None, help="student/teacher checkpoint folder (default: the shipped "
                   "tiny checkpoint of --sampler: fada_rt/assets/tiny-fast, tiny-balanced or tiny-teacher)")
    p.add_argument("--preset", default=None, help="expected preset of the checkpoint/engines (checked if given)")
    p.add_argument("--sampler", choices=tuple(SAMPLERS), default="fast", help="fast (default): CFG-distilled "
                   "student, 6 NFE; balanced: student with multi-CFG, 18 NFE; teacher: DDIM 25 steps x 3, 75 NFE")
    p.add_argument("--cfg-audio", type=float, default=None, help="audio guidance scale cfg_a of Eq. 9 (default: the "
                   "checkpoint's own, 2 for the shipped tiny ones, else the paper's 6.5; 1 = no audio guidance)")
    p.add_argument("--cfg-ref", type=float, default=None, help="reference guidance scale cfg_r of Eq. 9 (default: "
                   "the checkpoint's own, 1 for the shipped tiny ones, else the paper's: 2.0 fast, 2.5 balanced/teacher)")
    p.add_argument("--backend", choices=BACKENDS, default="torch", help="which runtime runs the networks (default torch)")
    p.add_argument("--engine-dir", default=None, help="exported engines folder (onnxruntime/tensorrt backends)")
    p.add_argument("--device", default="cpu", help="device, e.g. cpu (default), cuda, cuda:1")
    p.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"),
                   help="torch backend precision (default float32; half keeps norms in fp32)")
    p.add_argument("--compile", action="store_true", help="torch backend: torch.compile the denoiser and decoder")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice; "
                   "1 is often fastest on a busy machine)")
    p.add_argument("--cuda-graphs", action="store_true", help="torch backend on CUDA: replay denoiser CUDA graphs "
                   "(the tensorrt backend uses them by default)")


def pipeline_from_args(args: argparse.Namespace) -> AvatarPipeline:
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    return AvatarPipeline.from_checkpoint(args.checkpoint, backend=args.backend, engine_dir=args.engine_dir,
                                          device=args.device, dtype=args.dtype, compile=args.compile,
                                          cuda_graphs=True if args.cuda_graphs else None, preset=args.preset, sampler=args.sampler,
                                          cfg_audio=args.cfg_audio, cfg_ref=args.cfg_ref)


def main(argv: list[str] | None = None) -> int:
    from fada_rt.assets import example_audio, example_image

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        pipeline = pipeline_from_args(args)
        image = args.image if args.image is not None else example_image()
        audio = args.audio if args.audio is not None else example_audio()
        result = generate_video(pipeline=pipeline, image=image, audio=audio, out=args.out, size=args.size,
                                seed=args.seed, max_duration=args.max_duration, progress=not args.no_progress)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, BackendUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {result.path}: {result.frames} frames ({result.frames / 25:.2f} s), {result.nfe_per_chunk} NFE "
          f"per chunk, {result.wall_seconds:.1f} s ({result.realtime_factor:.2f}x real time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
