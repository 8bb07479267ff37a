"""The live loop's audio sources: the microphone (sounddevice, optional extra ``live``) and an audio file paced
in real time (``python -m fada_rt.live --audio-file F``). Both hand mono float32 blocks at
:data:`~fada_rt.media.SAMPLE_RATE` to a sink from their own thread and call ``on_end`` when they stop.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from fada_rt.media import SAMPLE_RATE, PcmConverter, iter_audio, probe_audio

PORTAUDIO_HINT = ('install PortAudio (Debian/Ubuntu: `apt-get install libportaudio2`) and the live extra '
                  '(`pip install -e ".[live]"`), or use --audio-file F')


class LiveInputError(RuntimeError):
    """The microphone cannot be used (library or device missing); the message says what to do."""


AudioSink = Callable[[np.ndarray], None]


def import_sounddevice() -> ModuleType:
    try:
        return importlib.import_module("sounddevice")
    except ImportError as err:
        raise LiveInputError(f"the microphone needs the sounddevice package: {PORTAUDIO_HINT}") from err
    except OSError as err:  # sounddevice is installed but libportaudio is not
        raise LiveInputError(f"the microphone needs the PortAudio library ({err}): {PORTAUDIO_HINT}") from err


class MicrophoneSource:
    """Mono blocks at :data:`~fada_rt.media.SAMPLE_RATE` from an input device (opened at its own rate and
    resampled when that rate is not offered)."""

    realtime = True

    def __init__(self, *, device: int | str | None = None, block_ms: int = 20) -> None:
        sd = import_sounddevice()
        try:
            info = sd.query_devices(device, kind="input")
        except (ValueError, sd.PortAudioError) as err:
            raise LiveInputError(f"no usable audio input device{f' {device!r}' if device is not None else ''} "
                                 f"({err}); connect a microphone, pick one with --input-device (list: "
                                 f"python -m sounddevice), or use --audio-file F") from err
        try:
            sd.check_input_settings(device, channels=1, samplerate=SAMPLE_RATE, dtype="float32")
            self.rate = SAMPLE_RATE
        except (ValueError, sd.PortAudioError):
            self.rate = int(info["default_samplerate"])  # resampled to SAMPLE_RATE below
        self.name = info["name"]
        self._sd, self._device, self._block = sd, device, self.rate * block_ms // 1000
        self._stream: Any = None
        self.overflows = 0

    def start(self, sink: AudioSink, on_end: Callable[[], None]) -> None:
        converter = PcmConverter()

        def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            if status.input_overflow:
                self.overflows += 1
            sink(converter.convert(indata.copy(), self.rate))

        try:
            self._stream = self._sd.InputStream(device=self._device, channels=1, samplerate=self.rate,
                                                dtype="float32", blocksize=self._block, callback=callback)
            self._stream.start()
        except self._sd.PortAudioError as err:
            raise LiveInputError(f"cannot open the microphone {self.name!r}: {err}") from err

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None


class FileSource:
    """An audio file as a live source: blocks released at ``speed`` x real time on the wall clock.

    ``speed=None``: as fast as the consumer takes it (``backlog`` limits how far ahead it runs).
    """

    def __init__(self, path: str | Path, *, speed: float | None = 1.0, block_ms: int = 20,
                 backlog: Callable[[], float] | None = None, max_ahead: float = 1.0) -> None:
        self.info = probe_audio(path)  # missing / non-audio files fail here, before anything starts
        if speed is not None and speed <= 0:
            raise ValueError(f"--speed must be > 0, got {speed}")
        with contextlib.closing(iter_audio(path, block_samples=SAMPLE_RATE // 10)) as blocks:
            if next(blocks, None) is None:
                raise ValueError(f"{path} contains no audio samples (empty audio); give a file with speech in it")
        self.path, self.speed, self.backlog, self.max_ahead = Path(path), speed, backlog, max_ahead
        self.block = SAMPLE_RATE * block_ms // 1000
        self.realtime = speed is not None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self, sink: AudioSink, on_end: Callable[[], None]) -> None:
        self._thread = threading.Thread(target=self._run, args=(sink, on_end), name="fada-file-source", daemon=True)
        self._thread.start()

    def _run(self, sink: AudioSink, on_end: Callable[[], None]) -> None:
        t0, sent = time.monotonic(), 0
        try:
            for block in iter_audio(self.path, block_samples=self.block):
                if self.speed is not None:
                    wait = t0 + sent / SAMPLE_RATE / self.speed - time.monotonic()
                    if self._stop.wait(max(0.0, wait)):
                        return
                elif self.backlog is not None:
                    while self.backlog() > self.max_ahead:
                        if self._stop.wait(0.002):
                            return
                if self._stop.is_set():
                    return
                sink(block)
                sent += block.size
        except BaseException as err:  # reported by the frame loop (a thread cannot raise into it)
            self.error = err
        finally:
            on_end()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
