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

from fada_rt import live
from fada_rt.backends.torch_backend import TorchBackend
from fada_rt.checkpoint import save_model
from fada_rt.live import FileSource, LiveInputError, MicrophoneSource, run_live
from fada_rt.media import probe_video, read_audio, write_wav
from fada_rt.pipeline import AvatarPipeline

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
    write_wav(root / "speech60.wav", speechy(60.0))
    write_wav(root / "speech1.wav", speechy(1.01, seed=2))
    write_wav(root / "speech20.wav", speechy(20.0, seed=3))
    return root


def audio_lag_ms(recorded: np.ndarray, source: np.ndarray, max_lag: int = 1600) -> float:
    """Where the source audio sits in the recording (ms; positive = recorded late)."""
    seg = source[16000:16000 * 11]
    scores = [float(np.dot(recorded[16000 + lag:16000 * 11 + lag], seg)) for lag in range(-max_lag, max_lag + 1)]
    return (int(np.argmax(scores)) - max_lag) / 16


@pytest.mark.slow
def test_sixty_second_live_run_from_a_file(files, tmp_path):
    """60 s through the live loop as fast as the CPU allows (no pacing): every frame, on the audio
    clock, recording in sync, memory flat."""
    model = make_tiny_model(seed=6).make_student("layer_tokens")
    randomize_zero_init(model)
    pipeline = AvatarPipeline(TorchBackend(model))
    source = FileSource(files / "speech60.wav", speed=None)
    process = psutil.Process(os.getpid())
    pts, rss = [], {}

    def on_frame(frame, t):
        pts.append(t)
        if len(pts) in (200, 500, 800, 1100, 1400, 1500):
            rss[len(pts)] = process.memory_info().rss / 2**20

    result = run_live(pipeline=pipeline, image=files / "face.png", crop="centre", source=source, record=tmp_path / "rec.mp4",
                      preview=False, size=64, on_frame=on_frame)
    assert result.frames == 1500 and result.recorded_frames == 1500 and not result.interrupted
    np.testing.assert_allclose(pts, np.arange(1500) / 25)  # frame timestamps are the audio sample clock
    assert result.stats["dropped_frames"] == 0 and result.stats["speech_frames"] == 1500
    assert result.stats["max_buffered_samples"] <= MAX_BUFFER_SAMPLES
    growth = max(rss.values()) - rss[200]
    assert growth < RSS_GROWTH_MB, rss

    info = probe_video(tmp_path / "rec.mp4")
    assert info.frames == 1500 and abs(info.audio_duration - 60.0) <= 1 / 25
    with av.open(str(tmp_path / "rec.mp4")) as c:  # video pts of the recording: k / 25 exactly
        vpts = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    np.testing.assert_allclose(vpts, np.arange(1500) / 25, atol=1e-6)
    lag = audio_lag_ms(read_audio(tmp_path / "rec.mp4"), read_audio(files / "speech60.wav"))
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
    real = live.importlib.import_module

    def import_module(name, *args):
        if name == "sounddevice":
            raise error
        return real(name, *args)

    return import_module


@pytest.mark.parametrize("error", [OSError("PortAudio library not found"), ImportError("No module named x")])
def test_missing_portaudio_or_sounddevice_is_a_clear_error(files, monkeypatch, capsys, error):
    monkeypatch.setattr(live.importlib, "import_module", failing_import(error))
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
    info = probe_video(out)
    # the whole stream is recorded (idle frames too), each frame with its own audio
    assert info.frames >= math.ceil(round(1.01 * 16000) / 640) == 26
    assert abs(info.audio_duration - info.frames / 25) <= 1 / 25


def test_ctrl_c_leaves_a_playable_recording(files, tmp_path):
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
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, rest
    assert "interrupted;" in rest
    reported = int(rest.split("recording: ")[1].split("(")[1].split()[0])  # "recording: OUT (N frames)"
    info = probe_video(out)  # decodes every frame: the file is complete and playable
    assert info.frames == reported and 8 <= reported < 500  # stopped long before the 20 s (500 frames) end
    assert info.audio_duration <= info.frames / 25 + 1 / 25
