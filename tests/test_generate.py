"""``python -m fada_rt.generate``: a playable mp4 of the right length, and every bad input's error."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import select
import signal
import subprocess
import sys
import time
import wave as wavelib
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import make_tiny_model, randomize_zero_init
from PIL import Image
from test_outputs import writable

from benchmarks.portrait_scenes import cartoon
from fada_rt import generate
from fada_rt.assets import EXAMPLE_AUDIO, EXAMPLE_IMAGE, default_checkpoint
from fada_rt.backends import LoadOptions, create_backend
from fada_rt.checkpoint import save_model
from fada_rt.generate import generate_video, main
from fada_rt.media import read_audio, write_wav
from fada_rt.pipeline import AvatarPipeline, check_sampler
from fada_rt.video_out import VideoWriter, probe_video

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    model = make_tiny_model(seed=2).make_student("layer_tokens")
    randomize_zero_init(model)
    save_model(model, root / "fast", role="student")
    canvas = np.full((120, 160, 3), 70, np.uint8)  # the example face, off-centre in a wide picture
    canvas[10:106, 50:146] = np.asarray(Image.open(EXAMPLE_IMAGE).convert("RGB").resize((96, 96)))
    Image.fromarray(canvas).save(root / "face.png")
    rate, seconds = 22050, 1.37  # stereo at an odd rate; 34.25 frames -> 35
    t = np.arange(round(rate * seconds)) / rate
    speech = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    write_wav(root / "speech.wav", np.stack([speech, 0.5 * speech]), sample_rate=rate)
    return root


def run_cli(*args: str) -> int:
    return main([*map(str, args), "--no-progress"])


def test_generate_writes_a_playable_mp4_of_the_right_length(files, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    assert run_cli("--image", files / "face.png", "--audio", files / "speech.wav", "--checkpoint",
                   files / "fast", "--out", out) == 0
    summary = capsys.readouterr().out
    assert "RTF " in summary and " fps" in summary and "x real time" not in summary  # one convention: lower is better
    info = probe_video(out)  # decodes every frame
    duration = round(22050 * 1.37) / 22050
    assert info.frames == math.ceil(duration * 25) == 35
    # the full picture: its own size, the face pasted back
    assert (info.video_codec, info.audio_codec, info.width, info.height, info.fps) == ("h264", "aac", 160, 120, 25)
    assert abs(info.audio_duration - duration) <= 1 / 25
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert np.std(frames[0]) > 1  # a picture, not a blank frame


def test_output_crop_writes_the_model_crop_at_size(files, tmp_path):
    out = tmp_path / "crop.mp4"
    assert run_cli("--image", files / "face.png", "--audio", files / "speech.wav", "--checkpoint", files / "fast",
                   "--out", out, "--output", "crop", "--size", "128") == 0
    info = probe_video(out)
    assert (info.width, info.height, info.frames) == (128, 128, 35)


def test_default_run_needs_only_out(tmp_path):
    """README's main command: the shipped fast student on the shipped examples."""
    assert run_cli("--out", tmp_path / "demo.mp4") == 0
    info = probe_video(tmp_path / "demo.mp4")
    seconds = read_audio(EXAMPLE_AUDIO).size / 16000
    assert info.frames == math.ceil(round(seconds * 25, 6)) and info.width == 256


@pytest.mark.parametrize(("sampler", "role", "cfg_mode"), [("fast", "student", "layer_tokens"),
                                                           ("balanced", "student", "none"),
                                                           ("balanced-conditional", "student", "none"),
                                                           ("teacher", "teacher", "none"),
                                                           ("teacher-6x1", "teacher", "none")])
def test_every_sampler_has_a_shipped_checkpoint(sampler, role, cfg_mode):
    folder = default_checkpoint(sampler)
    config = json.loads((folder / "config.json").read_text())
    assert config["role"] == role and config["model"]["cfg"]["mode"] == cfg_mode
    assert config["model"]["preset"] == "tiny" and (folder / "model.safetensors").stat().st_size > 1_000_000
    assert "command" in config["info"]  # how it was trained
    check_sampler(sampler, create_backend(LoadOptions("torch", checkpoint=folder)))  # the pair really runs
    with pytest.raises(ValueError, match="no shipped checkpoint for sampler"):
        default_checkpoint("bogus")


def write_hour_wav(path) -> None:
    with wavelib.open(str(path), "wb") as w:  # 1 h at 1 kHz, 8 bit: 3.6 MB
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(1000)
        w.writeframes(bytes([128]) * 3_600_000)


BAD_INPUTS = {
    "not an image": ("image", lambda p: p.write_text("hello"), "is not an image Pillow can read"),
    "corrupt image": ("image", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40), "not an image|corrupt"),
    "tiny image": ("image", lambda p: Image.new("RGB", (20, 20)).save(p, format="PNG"), "20x20 px: too small"),
    "no face (a drawing)": ("image", lambda p: Image.fromarray(cartoon(256)).save(p, format="PNG"),
                            "no face found in"),
    "blank image": ("image", lambda p: Image.new("RGB", (640, 480), (128, 128, 128)).save(p, format="PNG"),
                    "no face found in"),
    "empty audio": ("audio", lambda p: write_wav(p, np.zeros(0)), "contains no audio samples"),
    "hour-long audio": ("audio", write_hour_wav, "3600.0 s long, over --max-duration 600 s"),
    "not audio": ("audio", lambda p: p.write_bytes(b"\x00garbage" * 50), "cannot read audio from"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_give_clear_errors_and_no_output(files, tmp_path, capsys, case):
    which, make, message = BAD_INPUTS[case]
    bad = tmp_path / ("bad.png" if which == "image" else "bad.wav")
    make(bad)
    args = {"image": files / "face.png", "audio": files / "speech.wav"}
    args[which] = bad
    out = tmp_path / "out.mp4"
    assert run_cli("--image", args["image"], "--audio", args["audio"], "--checkpoint", files / "fast",
                   "--out", out) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert any(m in err for m in message.split("|")), err
    assert not out.exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--preset", "sd15"], "is a checkpoint of preset 'tiny', but preset 'sd15' was asked for"),
    (["--sampler", "balanced"], "use --sampler fast"),
    (["--backend", "onnxruntime", "--engine-dir", "/nonexistent/engines"], "python -m fada_rt.export"),
    (["--audio", "/nonexistent/a.wav"], "audio file /nonexistent/a.wav does not exist"),
    (["--cfg-audio", "-2"], "cfg_audio must be a guidance scale in [0, 20]"),
])
def test_bad_model_settings_give_clear_errors(files, tmp_path, capsys, extra, message):
    base = {"--image": str(files / "face.png"), "--audio": str(files / "speech.wav"), "--out": str(tmp_path / "o.mp4")}
    if "--backend" not in extra:
        base["--checkpoint"] = str(files / "fast")
    for flag, value in zip(extra[::2], extra[1::2]):
        base[flag] = value
    assert run_cli(*[x for kv in base.items() for x in kv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_silent_audio_is_allowed_and_reported(files, tmp_path, caplog):
    write_wav(tmp_path / "quiet.wav", np.zeros(8000))
    pipeline = AvatarPipeline.from_checkpoint(files / "fast")
    with caplog.at_level(logging.WARNING, logger="fada_rt.generate"):
        result = generate_video(pipeline=pipeline, image=files / "face.png", audio=tmp_path / "quiet.wav",
                                out=tmp_path / "q.mp4", progress=False)
    assert result.silent and result.frames == probe_video(tmp_path / "q.mp4").frames == 13
    assert result.video_seconds == 13 / pipeline.config.audio.fps
    assert result.rtf == pytest.approx(result.wall_seconds / result.video_seconds)  # compute s / media s
    assert result.fps == pytest.approx(13 / result.wall_seconds)
    assert "is silent" in caplog.text


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_interrupted_run_leaves_a_playable_partial_file(files, tmp_path, error):
    pipeline = AvatarPipeline.from_checkpoint(files / "fast")
    seen = []

    def stop_after_two(chunk):
        seen.append(chunk)
        if len(seen) == 2:
            raise error("stop")

    out = tmp_path / "partial.mp4"
    with pytest.raises(error):
        generate_video(pipeline=pipeline, image=files / "face.png", audio=files / "speech.wav", out=out,
                       progress=False, on_chunk=stop_after_two)
    info = probe_video(out)
    assert info.frames == 16
    assert info.audio_duration <= 16 / 25 + 1 / 25


def test_failure_before_the_first_frame_leaves_no_file(files, tmp_path):
    pipeline = AvatarPipeline.from_checkpoint(files / "fast")

    def fail(chunk):
        raise RuntimeError("boom")

    class FailingDecode:  # make the very first chunk fail inside the pipeline
        def __init__(self, backend):
            self.inner = backend

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def decode(self, latents):
            raise RuntimeError("decoder failed")

        def decode_async(self, latents):  # generate decodes beside the next chunk's steps: through decode too
            return lambda: self.decode(latents)

    pipeline.backend = FailingDecode(pipeline.backend)
    with pytest.raises(RuntimeError, match="decoder failed"):
        generate_video(pipeline=pipeline, image=files / "face.png", audio=files / "speech.wav",
                       out=tmp_path / "none.mp4", progress=False, on_chunk=fail)
    assert not (tmp_path / "none.mp4").exists()


# ---- outputs (issue 28) --------------------------------------------------------------------------


def no_model(args):
    raise AssertionError("the model was loaded before the output was checked")


def talk_mp4(path: Path) -> Path:
    """An mp4 with a voice in it: a valid --audio whose name is also a valid --out."""
    with VideoWriter(path, size=32) as w:
        w.write_audio(0.3 * np.sin(np.arange(16000, dtype=np.float32) / 5))
        w.write_frames(np.zeros((25, 32, 32, 3), np.uint8))
    return path


OUTPUT_CASES = {  # name: (--out relative to tmp_path or absolute, message)
    "a directory": ("folder.mp4", "is a directory; give a file name such as"),
    "the --audio input": ("talk.mp4", "is also an input of this run"),
    "the --audio input (another spelling)": ("sub/../talk.mp4", "is also an input of this run"),
    "the --image input": ("face.png", "is also an input of this run"),
    "an unsupported extension": ("out.avi", "must end in one of .mp4, .m4v, .mov, .mkv"),
    "an existing file": ("old.mp4", "already exists; pass --overwrite to replace it, or choose another --out"),
    "a file as its folder": ("note.txt/out.mp4", "note.txt is not a directory"),
    "a read-only folder": ("/sys/out.mp4", "cannot write to the directory /sys"),
    "a folder it cannot create": ("/sys/new/out.mp4", "cannot create the directory /sys/new in /sys"),
}


@pytest.mark.parametrize("case", list(OUTPUT_CASES))
def test_bad_outputs_are_refused_before_the_model_loads(files, tmp_path, monkeypatch, capsys, case):
    name, message = OUTPUT_CASES[case]
    if name.startswith("/sys") and (not Path("/sys").is_dir() or writable(Path("/sys"))):
        pytest.skip("needs a read-only /sys")
    (tmp_path / "folder.mp4").mkdir()
    (tmp_path / "sub").mkdir()
    (tmp_path / "note.txt").write_text("x")
    (tmp_path / "old.mp4").write_bytes(b"keep me")
    (tmp_path / "face.png").write_bytes((files / "face.png").read_bytes())
    audio = talk_mp4(tmp_path / "talk.mp4")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    monkeypatch.setattr(generate, "pipeline_from_args", no_model)
    monkeypatch.chdir(tmp_path)
    assert run_cli("--image", tmp_path / "face.png", "--audio", audio, "--out", name) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err and name in err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # inputs byte-identical
    with pytest.raises(ValueError if "existing" not in case else FileExistsError, match=re.escape(message)):
        generate_video(pipeline=None, image=tmp_path / "face.png", audio=audio, out=name)  # library: same check


def test_overwrite_replaces_an_existing_file(files, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"old")
    assert run_cli("--image", files / "face.png", "--audio", files / "speech.wav", "--checkpoint", files / "fast",
                   "--out", out, "--overwrite", "--output", "crop", "--size", "64") == 0
    assert probe_video(out).frames == 35 and sorted(tmp_path.iterdir()) == [out]  # no partial file left


def progress_at_least(proc: subprocess.Popen, frames: int, timeout: float = 120.0) -> str:
    """Read the tqdm bar on stderr until it shows ``frames`` frames written."""
    text, deadline, fd = "", time.monotonic() + timeout, proc.stderr.fileno()
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            text += chunk.decode(errors="replace")
            if any(int(n) >= frames for n in re.findall(r"(\d+)/\d+ \[", text)):
                return text
    pytest.fail("generate ended or stalled before the progress showed:\n" + text[-3000:])


def test_sigterm_leaves_a_playable_video_at_the_target(tmp_path):
    """A service manager's stop (SIGTERM) mid-run: the frames so far play at --out, exit 143."""
    write_wav(tmp_path / "long.wav", np.tile(read_audio(EXAMPLE_AUDIO), 4))  # 28 s: far from done when stopped
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "fada_rt.generate", "--audio", str(tmp_path / "long.wav"),
                             "--out", str(out), "--output", "crop", "--size", "64"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        progress_at_least(proc, 16)
        assert (tmp_path / ".out.partial.mp4").exists() and not out.exists()
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    rest = rest.decode()
    assert proc.returncode == 143, rest
    line = rest.strip().splitlines()[-1]
    assert line.startswith(f"stopped by SIGTERM: partial video {out}: ") and "Traceback" not in rest, rest
    frames = int(line.split(": ")[2].split()[0])
    info = probe_video(out)
    assert info.frames == frames and 16 <= frames < 700 and info.video_codec == "h264" and info.audio_codec == "aac"
    assert f"({frames / 25:.2f} s)" in line and abs(info.audio_duration - frames / 25) <= 1 / 25
    assert sorted(tmp_path.iterdir()) == [tmp_path / "long.wav", out]  # the partial file was renamed


HELP_MODULES = ("fada_rt.generate", "fada_rt.live", "fada_rt.checkpoint", "fada_rt.export", "benchmarks.nfe_latency",
                "benchmarks.guidance_sweep", "benchmarks.quality_table")
EXTRAS = ("onnx", "onnxruntime", "sounddevice", "cv2", "scipy", "accelerate", "matplotlib", "tensorrt", "polygraphy")


def test_every_help_works_without_the_optional_extras():
    """--help of every command line with none of the extras installed (their imports fail as if absent)."""
    script = (
        "import runpy, sys\n"
        f"for name in {EXTRAS!r}:\n"
        "    sys.modules[name] = None\n"
        "failed = []\n"
        f"for module in {HELP_MODULES!r}:\n"
        "    sys.argv = [module, '--help']\n"
        "    try:\n"
        "        runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
        "    except SystemExit as e:\n"
        "        if e.code:\n"
        "            failed.append(module)\n"
        "    except Exception as e:\n"
        "        failed.append(f'{module}: {e!r}')\n"
        "    else:\n"
        "        failed.append(f'{module}: no --help')\n"
        "print('FAILED', failed, file=sys.stderr)\n"
        "sys.exit(1 if failed else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for flag in ("--dtype", "--backend", "--engine-dir", "--precision"):
        assert flag in proc.stdout
