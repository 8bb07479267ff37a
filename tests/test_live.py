"""``python -m fada_rt.live``: a 60 s simulated run, microphone errors, file source, recording, Ctrl-C."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import av
import numpy as np
import psutil
import pytest
from conftest import make_tiny_model, randomize_zero_init
from PIL import Image
from test_outputs import writable

from fada_rt import generate, live, live_sources
from fada_rt.api import AvatarFrame
from fada_rt.backends.torch_backend import TorchBackend
from fada_rt.checkpoint import save_model
from fada_rt.live import run_live
from fada_rt.live_sources import FileSource, LiveInputError, MicrophoneSource
from fada_rt.media import read_audio, write_wav
from fada_rt.pipeline import AvatarPipeline
from fada_rt.video_out import VideoWriter, probe_video

REPO = Path(__file__).resolve().parents[1]
#: RSS growth allowed over a 60 s run after warm-up. Keeping every frame would cost 1500 x 64 x 64 x 3
#: = 18 MB, every decoded 256 px frame 295 MB; the audio itself is 3.8 MB, so the run also checks the
#: internal buffers directly (MAX_BUFFER_SAMPLES).
RSS_GROWTH_MB = 50
#: The feature buffer may hold the context (3 frames), one chunk, the look-ahead and the source's
#: run-ahead (1 s, FileSource.max_ahead) plus one 20 ms block: nothing proportional to the run length.
MAX_BUFFER_SAMPLES = 3 * 640 + 8 * 640 + 2 * 640 + 120 + 16000 + 320


def speechy(seconds: float, seed: int = 0) -> np.ndarray:
    """Syllable-rate bursts with pauses: enough structure to locate the audio track by correlation."""
    rng = np.random.default_rng(seed)
    n = round(seconds * 16000)
    t = np.arange(n) / 16000
    env = np.clip(np.sin(2 * np.pi * 3.1 * t), 0, None) * (np.sin(2 * np.pi * 0.37 * t) > -0.3)
    carrier = np.sin(2 * np.pi * (150 + 40 * np.sin(2 * np.pi * 0.5 * t)) * t)
    return (0.5 * env * carrier + 0.02 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    model = make_tiny_model(seed=6).make_student("layer_tokens")
    randomize_zero_init(model)
    save_model(model, root / "fast", role="student")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "face.png")
    write_wav(root / "speech30.wav", speechy(30.0))
    write_wav(root / "speech1.wav", speechy(1.01, seed=2))
    write_wav(root / "speech20.wav", speechy(20.0, seed=3))
    return root


def audio_lag_ms(recorded: np.ndarray, source: np.ndarray, max_lag: int = 1600) -> float:
    """Where the source audio sits in the recording (ms; positive = recorded late)."""
    seg = source[16000:16000 * 11]
    scores = [float(np.dot(recorded[16000 + lag:16000 * 11 + lag], seg)) for lag in range(-max_lag, max_lag + 1)]
    return (int(np.argmax(scores)) - max_lag) / 16


@pytest.mark.slow
def test_thirty_second_live_run_from_a_file(files, tmp_path):
    """30 s through the live loop as fast as the CPU allows (no pacing): every frame, on the audio
    clock, recording in sync, memory flat (an hour at real time: ``benchmarks/soak.py``)."""
    model = make_tiny_model(seed=6).make_student("layer_tokens")
    randomize_zero_init(model)
    pipeline = AvatarPipeline(TorchBackend(model))
    source = FileSource(files / "speech30.wav", speed=None)
    process = psutil.Process(os.getpid())
    pts, rss = [], {}

    def on_frame(frame, t):
        pts.append(t)
        if len(pts) in (150, 300, 450, 600, 750):
            rss[len(pts)] = process.memory_info().rss / 2**20

    result = run_live(pipeline=pipeline, image=files / "face.png", crop="centre", source=source, record=tmp_path / "rec.mp4",
                      preview=False, size=64, on_frame=on_frame)
    assert result.frames == 750 and result.recorded_frames == 750 and not result.interrupted
    np.testing.assert_allclose(pts, np.arange(750) / 25)  # frame timestamps are the audio sample clock
    assert result.stats["dropped_frames"] == 0 and result.stats["speech_frames"] == 750
    assert result.stats["max_buffered_samples"] <= MAX_BUFFER_SAMPLES
    growth = max(rss.values()) - rss[150]
    assert growth < RSS_GROWTH_MB, rss

    info = probe_video(tmp_path / "rec.mp4")
    assert info.frames == 750 and abs(info.audio_duration - 30.0) <= 1 / 25
    with av.open(str(tmp_path / "rec.mp4")) as c:  # video pts of the recording: k / 25 exactly
        vpts = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    np.testing.assert_allclose(vpts, np.arange(750) / 25, atol=1e-6)
    lag = audio_lag_ms(read_audio(tmp_path / "rec.mp4"), read_audio(files / "speech30.wav"))
    assert abs(lag) <= 40  # A/V offset of the recording (video exact, so the audio lag is the offset)


class FakePortAudioError(Exception):
    pass


def fake_sounddevice(*, devices_ok: bool = True, rate_16k: bool = False) -> types.ModuleType:
    """A stand-in for sounddevice: a 48 kHz microphone that speaks a tone from a thread."""
    sd = types.ModuleType("sounddevice")
    sd.PortAudioError = FakePortAudioError

    def query_devices(device=None, kind=None):
        if not devices_ok:
            raise FakePortAudioError("No input device matching")
        return {"name": "fake mic", "default_samplerate": 48000.0}

    def check_input_settings(device=None, channels=None, samplerate=None, dtype=None):
        if samplerate != 48000 and not rate_16k:
            raise FakePortAudioError("Invalid sample rate")

    class InputStream:
        def __init__(self, *, device, channels, samplerate, dtype, blocksize, callback):
            self.callback, self.rate, self.block = callback, samplerate, blocksize
            self.running = threading.Event()

        def start(self):
            self.running.set()

            def run():
                n = 0
                status = types.SimpleNamespace(input_overflow=False)
                while self.running.is_set() and n < self.rate * 2:
                    t = (n + np.arange(self.block)) / self.rate
                    self.callback((0.3 * np.sin(2 * np.pi * 200 * t))[:, None].astype(np.float32), self.block,
                                  None, status)
                    n += self.block
                    time.sleep(self.block / self.rate / 4)  # 4x real time

            self.thread = threading.Thread(target=run, daemon=True)
            self.thread.start()

        def stop(self):
            self.running.clear()
            self.thread.join()

        def close(self):
            pass

    sd.query_devices, sd.check_input_settings, sd.InputStream = query_devices, check_input_settings, InputStream
    return sd


def failing_import(error: BaseException):
    real = live_sources.importlib.import_module

    def import_module(name, *args):
        if name == "sounddevice":
            raise error
        return real(name, *args)

    return import_module


@pytest.mark.parametrize("error", [OSError("PortAudio library not found"), ImportError("No module named x")])
def test_missing_portaudio_or_sounddevice_is_a_clear_error(files, monkeypatch, capsys, error):
    monkeypatch.setattr(live_sources.importlib, "import_module", failing_import(error))
    with pytest.raises(LiveInputError, match="apt-get install libportaudio2") as info:
        MicrophoneSource()
    assert 'pip install -e ".[live]"' in str(info.value) and "--audio-file" in str(info.value)
    assert live.main(["--image", str(files / "face.png"), "--crop", "centre", "--checkpoint", str(files / "fast")]) == 2
    assert "apt-get install libportaudio2" in capsys.readouterr().err


def test_missing_input_device_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice(devices_ok=False))
    with pytest.raises(LiveInputError, match="no usable audio input device"):
        MicrophoneSource()


def test_microphone_path_end_to_end_with_a_fake_device(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice())
    source = MicrophoneSource()
    assert source.rate == 48000  # 16 kHz is not offered: opened at the device rate, resampled to 16 kHz
    pipeline = AvatarPipeline.from_checkpoint(files / "fast")
    pts = []
    result = run_live(pipeline=pipeline, image=files / "face.png", crop="centre", source=source, preview=False,
                      on_frame=lambda f, t: pts.append(t), duration=1.0)
    assert result.frames == len(pts) >= 8
    k = np.round(np.array(pts) * 25)
    assert np.allclose(k, np.array(pts) * 25) and np.all(np.diff(k) >= 1)  # on the frame grid, increasing
    assert result.stats["frames"] + result.stats["dropped_frames"] >= k[-1] + 1 - 8


def test_audio_file_source_needs_no_sounddevice_and_records(files, tmp_path, monkeypatch, capsys):
    """Paced at 4x real time: nothing is skipped under --max-latency's 1 s, the recording is CFR, every
    emitted frame with its own audio."""
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # `import sounddevice` raises ImportError
    out = tmp_path / "rec.mp4"
    code = live.main(["--image", str(files / "face.png"), "--crop", "centre", "--audio-file", str(files / "speech1.wav"),
                      "--speed", "4", "--no-preview", "--record", str(out), "--checkpoint", str(files / "fast"),
                      "--size", "64"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "done; frames" in printed and "latency" in printed and "dropped" in printed
    assert "A/V offset " in printed  # measured without the preview too
    info = probe_video(out)
    # the whole stream is recorded (idle frames too), each frame with its own audio
    assert info.frames >= math.ceil(round(1.01 * 16000) / 640) == 26
    assert abs(info.audio_duration - info.frames / 25) <= 1 / 25
    assert f"recording: {out} ({info.frames} frames, {info.frames / 25:.2f} s)" in printed


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_leaves_a_playable_recording(files, tmp_path, signum, code):
    """Ctrl-C, or a service manager's stop: the recording is finalised at --record, exit 128 + signum."""
    out = tmp_path / "rec.mp4"
    cmd = [sys.executable, "-m", "fada_rt.live", "--image", str(files / "face.png"), "--crop", "centre", "--audio-file",
           str(files / "speech20.wav"), "--record", str(out), "--no-preview", "--checkpoint", str(files / "fast"),
           "--size", "64"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:  # wait until some frames are out, then Ctrl-C
            lines.append(line)
            if line.startswith("frames ") and int(line.split()[1]) >= 16:
                break
        else:
            pytest.fail("live ended before any stats line:\n" + "".join(lines))
        assert (tmp_path / ".rec.partial.mp4").exists() and not out.exists()
        proc.send_signal(signum)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, rest
    assert f"stopped by {signal.Signals(signum).name}; frames" in rest and "Traceback" not in rest
    reported = int(rest.split(f"recording: {out} (")[1].split()[0])  # "recording: OUT (N frames, S s)"
    info = probe_video(out)  # decodes every frame: the file is complete and playable
    assert info.frames == reported and 8 <= reported < 500  # stopped long before the 20 s (500 frames) end
    assert info.audio_duration <= info.frames / 25 + 1 / 25 and info.audio_codec == "aac"
    assert sorted(tmp_path.iterdir()) == [out]  # the partial file was renamed


# ---- outputs, empty input, the report (issue 28) ----------------------------------------------------


def no_model(args, **kw):
    raise AssertionError("the model was loaded before the inputs and --record were checked")


@pytest.mark.parametrize(("record", "message"), [
    ("old.mp4", "--record old.mp4 already exists; pass --overwrite to replace it, or choose another --record"),
    ("talk.mp4", "--record talk.mp4 is also an input of this run"),
    ("folder", "--record folder is a directory"),
    ("/sys/rec.mp4", "--record /sys/rec.mp4: cannot write to the directory /sys"),
])
def test_bad_recordings_are_refused_before_the_model_loads(files, tmp_path, monkeypatch, capsys, record, message):
    if record.startswith("/sys") and (not Path("/sys").is_dir() or writable(Path("/sys"))):
        pytest.skip("needs a read-only /sys")
    (tmp_path / "folder").mkdir()
    (tmp_path / "old.mp4").write_bytes(b"keep me")
    with VideoWriter(tmp_path / "talk.mp4", size=32) as w:  # an --audio-file that is an mp4
        w.write_audio(speechy(1.0))
        w.write_frames(np.zeros((25, 32, 32, 3), np.uint8))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    monkeypatch.setattr(generate, "pipeline_from_args", no_model)
    monkeypatch.chdir(tmp_path)
    overwrite = ["--overwrite"] if record == "talk.mp4" else []  # it never allows writing over an input
    assert live.main(["--image", str(files / "face.png"), "--audio-file", str(tmp_path / "talk.mp4"), "--no-preview",
                      "--record", record, *overwrite]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {message}") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err and "recording" not in captured.out
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_an_empty_audio_file_is_an_error_and_nothing_is_recorded(files, tmp_path, monkeypatch, capsys):
    write_wav(tmp_path / "empty.wav", np.zeros(0))
    monkeypatch.setattr(generate, "pipeline_from_args", no_model)
    assert live.main(["--image", str(files / "face.png"), "--audio-file", str(tmp_path / "empty.wav"), "--no-preview",
                      "--record", str(tmp_path / "rec.mp4")]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {tmp_path / 'empty.wav'} contains no audio samples (empty audio); give a file " \
                           "with speech in it\n"
    assert "recording" not in captured.out and sorted(tmp_path.iterdir()) == [tmp_path / "empty.wav"]


class SteppedClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class ScriptedAvatar:
    """Stands in for StreamingAvatar: ``count`` frames at 32 fps (exact in binary) on a fake clock. Frame ``k``
    leaves at ``(k + 1) / 32`` s plus a 0.5 s stall from frame 40 on; its audio was captured 0.25 s before
    until frame 32, then 2 s before (the source fell behind by 1.75 s)."""

    fps, audio_rate, count = 32, 16000, 96

    def __init__(self, image, **kwargs) -> None:
        self.clock, self.k = SteppedClock(), 0
        self.portrait = types.SimpleNamespace(note=None, faces=(), size=(64, 64))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        pass

    def push_audio(self, samples, rate) -> None:
        pass

    def end_audio(self) -> None:
        pass

    def next_frame(self, timeout=None):
        if self.k == self.count:
            return None
        self.clock.t = (self.k + 1) / 32 + (0.5 if self.k >= 40 else 0.0)
        frame = AvatarFrame(image=np.zeros((64, 64, 3), np.uint8), audio=np.zeros(500, np.float32), pts=self.k / 32,
                            index=self.k, speaking=True, turn=1,
                            captured_at=self.clock.t - (0.25 if self.k < 32 else 2.0))
        self.k += 1
        return frame

    @property
    def stats(self) -> dict:
        return {"frames": self.k, "fps": 32.0, "rtf": 0.5, "dropped_frames": 0, "pending_seconds": 0.0}


class SilentSource:
    realtime = True

    def start(self, sink, on_end) -> None:
        pass

    def stop(self) -> None:
        pass


def test_latency_and_av_offset_are_measured_per_frame_and_reported_per_interval(monkeypatch):
    """Without the preview: each report has the last, mean and max of its own interval (not of the run, not a
    running maximum), so the source falling behind and the stall show up when they happen."""
    monkeypatch.setattr(live, "StreamingAvatar", ScriptedAvatar)
    reports = []
    result = run_live(pipeline=None, image="face.png", source=SilentSource(), preview=False, report=reports.append)
    assert result.frames == 96 and result.recording is None and result.recorded_frames is None
    keys = [f"{n}_ms_{k}" for n in ("latency", "av_offset") for k in ("last", "mean", "max")]
    got = [[r[k] for k in keys] for r in reports]  # reports at 1.0 s (frames 0-31), 2.0 s (32-47), 3.0 s (48-79)
    assert got == [[250, 250, 250, 0, 0, 0], [2000, 2000, 2000, 500, 250, 500], [2000, 2000, 2000, 500, 500, 500]]
    assert live.format_stats(reports[1]).split(" | ")[3:5] == ["latency 2000 ms (mean 2000, max 2000)",
                                                               "A/V offset 500 ms (mean 250, max 500)"]
    total = [result.stats[k] for k in keys]  # the final line: the whole run
    assert total == [2000, pytest.approx((32 * 250 + 64 * 2000) / 96, abs=0.1), 2000,
                     500, pytest.approx(56 * 500 / 96, abs=0.1), 500]  # frames 40-95 are 0.5 s behind


def test_the_report_names_a_recording_only_when_one_was_written(monkeypatch, tmp_path, capsys, files):
    monkeypatch.setattr(ScriptedAvatar, "count", 0)  # the stream ends before its first frame
    monkeypatch.setattr(live, "StreamingAvatar", ScriptedAvatar)
    pipeline = types.SimpleNamespace(rolling=False, nfe=1, chunk_frames=8, sampler=types.SimpleNamespace(name="fast"),
                                     config=types.SimpleNamespace(preset="tiny", audio=types.SimpleNamespace(fps=32)))
    monkeypatch.setattr(generate, "pipeline_from_args", lambda args, **kw: pipeline)
    assert live.main(["--image", str(files / "face.png"), "--audio-file", str(files / "speech1.wav"), "--no-preview",
                      "--record", str(tmp_path / "rec.mp4")]) == 0
    out = capsys.readouterr().out
    assert f"no recording written to {tmp_path / 'rec.mp4'}: no frame was emitted" in out and "recording:" not in out
    assert list(tmp_path.iterdir()) == []
