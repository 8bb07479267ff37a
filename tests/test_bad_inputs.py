"""The bad-input corpus of ``python -m fada_rt.generate`` (issue 28, item 2), built here from code: no binaries.

One parametrised test, one id per case. Each case builds its inputs in ``tmp_path``, runs the command line (in
this process: :func:`fada_rt.generate.main`; the stop signals in a real subprocess) and asserts

* the exit code: 0 for inputs that must work (with a warning where something is off), 2 for a refusal,
  ``128 + signum`` for a stop signal;
* that one line names the problem and the fix (two words per case), with no traceback anywhere: a refusal is
  exactly one line on stderr starting with ``error:``; a warning is one log record; a stop is the last line;
* what is at ``--out``: a playable video (frames, an AAC track) where something was made, before a failure
  included; nothing where the run was refused; an existing file untouched; never a ``.partial`` file left.

Cases that only need *a* model share the shipped tiny student (``shipped`` in conftest, loaded once); the
checkpoint and engine cases go through the real loading with a tiny model saved here; the output cases must be
refused before any model loads. Audio is at most 0.5 s (one or two chunks) except where a case needs more.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import make_tiny_model, randomize_zero_init
from PIL import Image
from safetensors.torch import load_file, save_file
from test_generate import progress_at_least, talk_mp4
from test_manifest import _engine_dir
from test_media import corrupt_png, tone, truncated_jpeg, write_coded, write_float_wav, write_png
from test_outputs import writable

from fada_rt import generate
from fada_rt.assets import EXAMPLE_IMAGE
from fada_rt.checkpoint import save_model
from fada_rt.media import write_wav
from fada_rt.outputs import partial_path
from fada_rt.video_out import VideoWriter, probe_video

REPO = Path(__file__).resolve().parents[1]
FAST = ("--crop", "centre", "--output", "crop", "--size", "64")  # no face detection, small frames: the audio cases


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny CFG-distilled student (random init) saved as a checkpoint folder: the real loading path."""
    model = make_tiny_model(seed=5).make_student("layer_tokens")
    randomize_zero_init(model)
    return save_model(model, tmp_path_factory.mktemp("bad-inputs") / "fast", role="student")


# ---- builders: each writes its inputs into the folder and returns the arguments besides --out ------------------


def face(side: int = 96) -> Image.Image:
    return Image.open(EXAMPLE_IMAGE).convert("RGB").resize((side, side), Image.Resampling.LANCZOS)


def speech(folder: Path, seconds: float = 0.3, rate: int = 16000, channels: int = 1) -> Path:
    """A voiced tone at ``rate`` Hz with ``channels`` channels (16-bit wav)."""
    t = np.arange(round(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    path = folder / f"speech-{rate}-{channels}.wav"
    write_wav(path, np.stack([wave * (1 - 0.1 * c) for c in range(channels)]), sample_rate=rate)
    return path


def picture(folder: Path) -> Path:
    face(64).save(folder / "face.png")  # the model's resolution: with --crop centre, no detector
    return folder / "face.png"


def with_image(make: Callable[[Path], None], name: str) -> Callable[[Path], list[str]]:
    """A case of the picture: ``make`` writes it; the detector finds the face, the full picture is the video."""
    def build(folder: Path) -> list[str]:
        make(folder / name)
        return ["--image", str(folder / name), "--audio", str(speech(folder))]
    return build


def with_audio(make: Callable[[Path], object], name: str) -> Callable[[Path], list[str]]:
    """A case of the audio: ``make`` writes it; the picture and the output are the cheapest there are."""
    def build(folder: Path) -> list[str]:
        make(folder / name)
        return ["--image", str(picture(folder)), "--audio", str(folder / name), *FAST]
    return build


def rgba_face(path: Path) -> None:
    alpha = np.zeros((96, 96), np.uint8)
    alpha[8:88, 8:88] = 255  # a transparent border: composited over white
    image = face()
    image.putalpha(Image.fromarray(alpha))
    image.save(path)


def sixteen_bit_face(path: Path) -> None:
    grey = np.asarray(face().convert("L"), np.uint16) * 257
    Image.fromarray(grey).save(path)  # mode I;16


def animated_face(path: Path) -> None:
    first, second = face().quantize(128), Image.new("RGB", (96, 96), (0, 0, 200)).quantize(8)
    first.save(path, save_all=True, append_images=[second], duration=100)


def write_opus(path: Path, seconds: float) -> None:
    """A 300 Hz tone as opus in ogg pages of 0.2 s (ffmpeg's default, 1 s, would make short files one page)."""
    wave = tone(seconds, 48000, 300, 0.5)
    with av.open(str(path), "w", options={"page_duration": "200000"}) as c:
        s = c.add_stream("libopus", rate=48000)
        s.layout = "mono"
        frame = av.AudioFrame.from_ndarray(wave[None], format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, 0, Fraction(1, 48000)
        c.mux(s.encode(frame))
        c.mux(s.encode(None))


def damaged(seconds: float, cut: float | None = None, zeros: tuple[float, float] | None = None
            ) -> Callable[[Path], None]:
    """A 300 Hz tone encoded with the codec of the file's suffix (:func:`test_media.write_coded`, or
    :func:`write_opus`), cut to its first ``cut`` fraction of bytes or with the byte range ``zeros`` (fractions)
    overwritten with zeros."""
    def make(path: Path) -> None:
        (write_opus if path.suffix == ".opus" else write_coded)(path, seconds)
        data = path.read_bytes()
        if cut is not None:
            data = data[: round(len(data) * cut)]
        if zeros is not None:
            a, b = (round(len(data) * f) for f in zeros)
            data = data[:a] + bytes(b - a) + data[b:]
        path.write_bytes(data)
    return make


def non_finite(value: float) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        wave = tone(0.4, 16000, 220, 0.3)
        wave[3200] = value  # at 0.20 s
        write_float_wav(path, wave, 16000)
    return make


def mute_video(path: Path) -> None:
    with VideoWriter(path, size=32, audio=False) as w:
        w.write_frames(np.zeros((5, 32, 32, 3), np.uint8))


def with_output(prepare: Callable[[Path], None] | None = None, *, audio: str | None = None
                ) -> Callable[[Path], list[str]]:
    """A case of --out: ``prepare`` makes what is in the way; ``audio``: the --audio file (a video with sound)."""
    def build(folder: Path) -> list[str]:
        if prepare is not None:
            prepare(folder)
        voice = talk_mp4(folder / audio) if audio else speech(folder)
        return ["--image", str(picture(folder)), "--audio", str(voice), *FAST]
    return build


def with_checkpoint(damage: Callable[[Path], None] | None = None, *extra: str, folder_name: str = "ckpt"
                    ) -> Callable[[Path, Path], list[str]]:
    """A case of --checkpoint: a copy of the module's tiny checkpoint, ``damage`` done to it."""
    def build(folder: Path, checkpoint: Path) -> list[str]:
        ckpt = folder / folder_name
        if folder_name == "ckpt":
            ckpt.mkdir()
            for f in checkpoint.iterdir():
                (ckpt / f.name).write_bytes(f.read_bytes())
        if damage is not None:
            damage(ckpt)
        return ["--image", str(picture(folder)), "--audio", str(speech(folder)), *FAST, "--checkpoint", str(ckpt),
                "--threads", "1", *extra]
    return build


def truncate_weights(ckpt: Path) -> None:
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def unknown_key(ckpt: Path) -> None:
    config = ckpt / "config.json"
    config.write_text(config.read_text().replace('"info":', '"trained_with": "v2",\n  "info":', 1))


def unknown_weights(ckpt: Path) -> None:
    """The weights with one tensor more than the config's model has."""
    weights = load_file(str(ckpt / "model.safetensors"))
    save_file({**weights, "denoiser.lip_sync_head.weight": torch.zeros(4, 4)}, str(ckpt / "model.safetensors"))


def with_engines(state: str) -> Callable[[Path], list[str]]:
    """A case of --backend onnxruntime --engine-dir: ``missing`` (no such folder), ``unfinished`` (no manifest),
    ``stale`` (a graph file changed since the manifest was written)."""
    def build(folder: Path) -> list[str]:
        engines = folder / "engines"
        if state == "unfinished":
            engines.mkdir()
            (engines / "denoiser.onnx").write_bytes(b"half an export")
        elif state == "stale":
            engines, _ = _engine_dir(folder, tensorrt=False)  # a manifest matching its (fake) files exactly ...
            (engines / "denoiser.onnx").write_bytes(b"re-exported since")  # ... until one changes
        return ["--image", str(picture(folder)), "--audio", str(speech(folder)), *FAST, "--backend", "onnxruntime",
                "--engine-dir", str(engines), "--threads", "1"]
    return build


# ---- the cases ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    build: Callable[..., list[str]]  # (folder[, checkpoint]) -> the arguments besides --out
    code: int  # the exit code
    problem: str = ""  # words of the one line that says what happened ...
    fix: str = ""  # ... and what to do (a warning: what was done about it)
    produced: str = "none"  # at --out: "none", "video" (playable), "kept" (the file that was there, untouched)
    frames: int | None = None  # the video's frame count, where it is known
    model: str = "shared"  # "shared": the module's pipeline; "none": must not load; "real": the real loading
    out: str = "out.mp4"  # --out, relative to the case's folder (or absolute)
    signum: int | None = None  # a stop signal sent to a subprocess mid-run
    needs_checkpoint: bool = False
    hide: str | None = None  # a package that is not installed, as far as this case can tell


def refused(build, problem: str, fix: str, **kw) -> Case:
    return Case(build, 2, problem, fix, **kw)


def works(build, frames: int | None = None, problem: str = "", fix: str = "", **kw) -> Case:
    return Case(build, 0, problem, fix, produced="video", frames=frames, **kw)




CASES = [
    # images: refused ...
    pytest.param(refused(with_image(corrupt_png, "corrupt.png"), "is a corrupt or truncated image", "re-export"),
                 id="image-corrupt"),
    pytest.param(refused(with_image(truncated_jpeg, "cut.jpg"), "is a corrupt or truncated image", "re-export"),
                 id="image-truncated"),
    pytest.param(refused(with_image(lambda p: p.write_bytes(b""), "empty.png"), "empty (0 bytes)", "re-export"),
                 id="image-empty"),
    pytest.param(refused(with_image(lambda p: p.write_text("my portrait\n"), "notes.png"), "not an image",
                         "PNG, JPEG"), id="image-text"),
    pytest.param(refused(with_image(lambda p: face(20).save(p), "tiny.png"), "20x20 px: too small",
                         "use a larger picture"), id="image-tiny"),
    pytest.param(refused(with_image(lambda p: write_png(p, 13000, 13000), "huge.png"), "169 Mpx", "downscale"),
                 id="image-huge"),
    pytest.param(refused(with_image(lambda p: write_png(p, 9000, 8000), "big.png"), "9000x8000 px", "downscale"),
                 id="image-huge-under-pillow-limit"),
    # ... and taken
    pytest.param(works(with_image(lambda p: face().convert("L").save(p), "grey.png"), 8), id="image-grayscale"),
    pytest.param(works(with_image(rgba_face, "rgba.png"), 8), id="image-rgba"),
    pytest.param(works(with_image(lambda p: face().convert("CMYK").save(p, quality=95), "cmyk.jpg"), 8),
                 id="image-cmyk"),
    pytest.param(works(with_image(sixteen_bit_face, "grey16.png"), 8), id="image-16bit"),
    pytest.param(works(with_image(animated_face, "animated.gif"), 8), id="image-animated-gif"),
    # audio: refused ...
    pytest.param(refused(with_audio(lambda p: p.write_bytes(b""), "empty.wav"), "empty (0 bytes)", "re-export"),
                 id="audio-empty-file"),
    pytest.param(refused(with_audio(lambda p: write_wav(p, np.zeros(0)), "nothing.wav"), "no audio samples",
                         "give a file with speech"), id="audio-no-samples"),
    pytest.param(refused(with_audio(non_finite(np.nan), "nan.wav"), "NaN or infinite sample at 0.20 s",
                         "re-export"), id="audio-nan"),
    pytest.param(refused(with_audio(non_finite(-np.inf), "inf.wav"), "NaN or infinite sample at 0.20 s",
                         "re-export"), id="audio-inf"),
    pytest.param(refused(with_audio(lambda p: p.write_bytes(b"\x00garbage" * 64), "noise.mp3"),
                         "cannot read audio", "re-export"), id="audio-not-audio"),
    pytest.param(refused(with_audio(mute_video, "mute.mp4"), "no audio stream (a video without sound)",
                         "give an audio file"), id="audio-video-without-audio"),
    pytest.param(refused(with_audio(damaged(1.5, cut=0.33), "cut.m4a"), "cannot read audio",
                         "re-export"), id="audio-m4a-truncated"),
    pytest.param(refused(with_audio(damaged(3.0, zeros=(0.45, 0.75)), "corrupt.mp3"), "failed after",
                         "re-export", produced="video"), id="audio-mp3-corrupt"),
    pytest.param(refused(with_audio(damaged(1.5, zeros=(0.33, 0.66)), "corrupt.aac"), "failed after",
                         "re-export"), id="audio-aac-corrupt"),
    # ... and taken, with a warning where something is off
    pytest.param(works(with_audio(lambda p: write_wav(p, tone(0.1, 44100), sample_rate=44100), "short.wav"), 3),
                 id="audio-0.1s"),
    pytest.param(works(with_audio(lambda p: write_wav(p, np.zeros(4800)), "silence.wav"), 8, "is silent",
                       "keeps its mouth closed"), id="audio-silence"),
    pytest.param(works(with_audio(lambda p: write_float_wav(p, tone(0.3, 16000, 220, 1.5), 16000), "loud.wav"), 8,
                       "beyond ±1", "clipped"), id="audio-clipping"),
    *(pytest.param(works(lambda folder, r=rate, c=channels: [
        "--image", str(picture(folder)), "--audio", str(speech(folder, 0.3, r, c)), *FAST], 8),
        id=f"audio-{rate // 1000}khz-{channels}ch")
      for rate, channels in [(8000, 1), (11025, 2), (16000, 3), (22050, 4), (24000, 5), (32000, 6), (44100, 7),
                             (48000, 8)]),
    pytest.param(works(with_audio(damaged(1.5, cut=0.33), "cut.mp3"), None, "probably truncated", "re-export"),
                 id="audio-mp3-truncated"),
    pytest.param(works(with_audio(damaged(1.5, cut=0.33), "cut.aac"), None, "last packet does not decode",
                       "re-export"), id="audio-aac-truncated"),
    # (ogg's pages declare what is there: a cut opus file is nothing to notice; cut inside its first page, it is
    # not readable at all, like the m4a above)
    pytest.param(works(with_audio(damaged(1.0, cut=0.5), "cut.opus")), id="audio-opus-truncated"),
    pytest.param(works(with_audio(damaged(1.0, zeros=(0.4, 0.6)), "corrupt.opus"), None, "probably truncated",
                       "re-export"), id="audio-opus-corrupt"),  # decoding ends at the damage: what decoded is used
    # outputs: refused before the model loads; what is there stays as it was
    pytest.param(refused(with_output(), "cannot write to the directory /sys", "choose a writable place",
                         model="none", out="/sys/out.mp4"), id="output-read-only"),
    pytest.param(refused(with_output(lambda f: (f / "out.mp4").mkdir()), "is a directory", "give a file name",
                         model="none"), id="output-directory"),
    pytest.param(refused(with_output(audio="talk.mp4"), "is also an input", "choose another --out", model="none",
                         out="talk.mp4", produced="kept"), id="output-same-as-input"),
    pytest.param(refused(with_output(lambda f: (f / "out.mp4").write_bytes(b"last week's video")),
                         "already exists", "--overwrite", model="none", produced="kept"), id="output-existing"),
    pytest.param(refused(with_output(), "must end in one of .mp4", "e.g. out.mp4", model="none", out="out.avi"),
                 id="output-bad-extension"),
    # checkpoints: the real loading
    pytest.param(refused(with_checkpoint(folder_name="no-such-checkpoint"), "does not exist", "--checkpoint",
                         model="real", needs_checkpoint=True), id="checkpoint-missing"),
    pytest.param(refused(with_checkpoint(lambda c: (c / "model.safetensors").unlink()), "model.safetensors is missing",
                         "--checkpoint", model="real", needs_checkpoint=True), id="checkpoint-missing-weights"),
    pytest.param(refused(with_checkpoint(truncate_weights), "not a readable safetensors", "re-download",
                         model="real", needs_checkpoint=True), id="checkpoint-truncated"),
    pytest.param(refused(with_checkpoint(None, "--preset", "sd15"), "preset 'tiny', but preset 'sd15'",
                         "--preset tiny", model="real", needs_checkpoint=True), id="checkpoint-wrong-preset"),
    pytest.param(refused(with_checkpoint(unknown_weights), "1 unexpected keys ['denoiser.lip_sync_head.weight']",
                         "--checkpoint", model="real", needs_checkpoint=True), id="checkpoint-unknown-weights"),
    pytest.param(refused(with_checkpoint(unknown_key), "unknown keys ['trained_with']", "fada-rt",
                         model="real", needs_checkpoint=True), id="checkpoint-unknown-config-keys"),
    # engines: the real loading
    pytest.param(refused(with_engines("stale"), "needs onnxruntime", "pip install", model="real",
                         hide="onnxruntime"), id="engine-runtime-not-installed"),
    pytest.param(refused(with_engines("missing"), "does not exist", "python -m fada_rt.export", model="real"),
                 id="engine-missing"),
    pytest.param(refused(with_engines("unfinished"), "has no manifest.json", "python -m fada_rt.export",
                         model="real"), id="engine-no-manifest"),
    pytest.param(refused(with_engines("stale"), "denoiser.onnx changed since export", "python -m fada_rt.export",
                         model="real"), id="engine-stale-manifest"),
    # stop signals mid-write: a real process; the frames so far play at --out
    pytest.param(Case(lambda f: [], 130, "stopped by SIGINT", "partial video", "video", signum=signal.SIGINT),
                 id="signal-sigint"),
    pytest.param(Case(lambda f: [], 143, "stopped by SIGTERM", "partial video", "video", signum=signal.SIGTERM),
                 id="signal-sigterm"),
]


# ---- running them -------------------------------------------------------------------------------------------


def no_model(args):
    raise AssertionError("the model was loaded before the output was checked")


def run_in_process(argv: list[str]) -> tuple[int | str | None, str]:
    """(exit code, a traceback) of ``main``: an exception out of it is a traceback, reported as such."""
    try:
        return generate.main(argv), ""
    except SystemExit as exit_:  # argparse
        return exit_.code, ""
    except BaseException:
        return "traceback", traceback.format_exc()


@dataclass(frozen=True)
class Stopped:
    code: int | None
    stderr: str
    out: Path
    partial_first: bool  # when the signal was sent, the video was being written under its partial name only


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> dict[int, Stopped]:
    """``python -m fada_rt.generate`` on 20 s of speech, once per stop signal, each sent its signal once it has
    written 8 frames. Both processes start together: most of their time is importing torch."""
    folder = tmp_path_factory.mktemp("signals")
    audio = speech(folder, 20.0)
    runs = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        out = folder / f"{signum.name.lower()}.mp4"
        runs[signum] = out, subprocess.Popen(
            [sys.executable, "-m", "fada_rt.generate", "--audio", str(audio), "--out", str(out), *FAST[2:],
             "--threads", "1"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "OMP_NUM_THREADS": "1"})
    shown, partial_first, results = {}, {}, {}
    try:
        for signum, (out, proc) in runs.items():
            shown[signum] = progress_at_least(proc, 8)
            partial_first[signum] = partial_path(out).exists() and not out.exists()
            proc.send_signal(signum)
        for signum, (out, proc) in runs.items():
            _, rest = proc.communicate(timeout=60)
            results[signum] = Stopped(proc.returncode, shown[signum] + rest.decode(errors="replace"), out,
                                      partial_first[signum])
    finally:
        for _, proc in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case: Case, tmp_path, request, monkeypatch, capsys, caplog):
    if case.out.startswith("/sys") and (not Path("/sys").is_dir() or writable(Path("/sys"))):
        pytest.skip("needs a read-only /sys")
    if case.signum is not None:
        run = request.getfixturevalue("stopped")[case.signum]
        code, err, out, before = run.code, run.stderr, run.out, {}
        assert run.partial_first, "the video was not written under its partial name"
        lines = [line.strip() for line in err.replace("\r", "\n").splitlines() if line.strip()]
        said, logged, printed = lines[-1:], err, ""  # the stop: the last line
    else:
        out = tmp_path / case.out
        args = case.build(tmp_path, request.getfixturevalue("checkpoint")) if case.needs_checkpoint \
            else case.build(tmp_path)
        before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
        if case.model == "shared":
            shipped = request.getfixturevalue("shipped")
            monkeypatch.setattr(generate, "pipeline_from_args", lambda _: shipped)
        elif case.model == "none":
            monkeypatch.setattr(generate, "pipeline_from_args", no_model)
        if case.hide is not None:
            monkeypatch.setitem(sys.modules, case.hide, None)  # its import fails
        with caplog.at_level(logging.INFO):
            code, crash = run_in_process([*args, "--out", str(out), "--no-progress"])
        captured = capsys.readouterr()
        err, printed = captured.err + crash, captured.out
        lines = [line for line in err.splitlines() if line.strip()]
        logged = "\n".join(r.getMessage() for r in caplog.records)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        said = lines if case.code == 2 else warnings  # a refusal: the error line; else: a warning's record
    report = f"exit {code}\nstdout:\n{printed}\nstderr:\n{err}\nlog:\n{logged}"

    assert "Traceback" not in err and "Traceback" not in logged, report
    assert code == case.code, report
    if case.code == 2:
        assert len(lines) == 1 and lines[0].startswith("error: "), report  # one line, nothing after it
    if case.problem:
        matching = [line for line in said if case.problem in line and case.fix in line]
        assert len(matching) == 1 and "\n" not in matching[0], report  # the problem and the fix in one line
    elif case.code == 0:
        assert not said, report  # nothing to warn about
    if case.code == 0:
        assert f"wrote {out}: " in printed and not lines, report  # the summary on stdout; stderr empty

    assert not partial_path(out).exists(), "a partial file was left behind"
    if case.produced == "video":  # playable: every frame decodes, with its sound
        info = probe_video(out)
        assert info.frames > 0 and info.video_codec == "h264" and info.audio_codec == "aac", info
        assert abs(info.audio_duration - info.frames / 25) <= 1 / 25 + 1e-6, info
        if case.frames is not None:
            assert info.frames == case.frames, info
        if case.signum is not None:  # stopped: the last line says how much is there
            assert f"{out}: {info.frames} frames ({info.frames / 25:.2f} s)" in said[0], report
        elif case.code == 2:  # failed after some frames: a warning says how much is there
            assert f"partial video written: {out} ({info.frames} frames" in logged, report
    elif case.produced == "kept":
        assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # byte-identical
    else:
        assert not out.exists() or out.is_dir(), "a refused run wrote --out"
    assert all(p.read_bytes() == data for p, data in before.items()), "an input was changed"
