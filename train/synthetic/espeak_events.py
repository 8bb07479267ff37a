"""espeak-ng with phoneme events, through ``libespeak-ng`` (ctypes), as a child process of world speech v2.

``python train/synthetic/espeak_events.py`` reads a JSON job on stdin (``voice``, ``wpm``, ``pitch``,
``texts``, ``out``) and writes ``out/<i>.wav`` (16-bit, the engine's rate) and ``out/<i>.json`` (the phones as
``[name, start sample]``) for each text. :mod:`train.synthetic.tts` starts one process per call: the library
keeps state between utterances of a process, so a fresh one keeps the world reproducible.
"""

from __future__ import annotations

import ctypes
import json
import sys
import wave
from pathlib import Path

_AUDIO_OUTPUT_SYNCHRONOUS, _INITIALIZE_PHONEME_EVENTS, _CHARS_UTF8 = 2, 1, 1
_RATE, _PITCH = 1, 3  # espeak_PARAMETER
_EVENT_LIST_TERMINATED, _EVENT_PHONEME = 0, 7


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


def library() -> ctypes.CDLL | None:
    """``libespeak-ng``, or None when it is not installed."""
    try:
        return ctypes.CDLL("libespeak-ng.so.1")
    except OSError:
        return None


def speak(job: dict) -> None:
    """Synthesise ``job["texts"]`` with ``job["voice"]`` into ``job["out"]`` (see the module docstring)."""
    lib = library()
    if lib is None:
        raise RuntimeError("libespeak-ng is not installed: apt-get install espeak-ng")
    audio: list[bytes] = []  # 16-bit mono pieces; the child imports no numpy: it starts in a few ms
    phones: list[tuple[str, int]] = []

    def collect(wav, n, events) -> int:
        if n > 0:
            audio.append(ctypes.string_at(wav, 2 * n))
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            if e.type == _EVENT_PHONEME and not e.id.startswith(b"("):  # "(en)": a language switch, not a phone
                phones.append((bytes(e.id).split(b"\0")[0].decode(errors="replace"), int(e.sample)))
            i += 1
        return 0

    callback = _CALLBACK(collect)
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_PHONEME_EVENTS)
    lib.espeak_SetSynthCallback(callback)
    if lib.espeak_SetVoiceByName(job["voice"].encode()) != 0:
        raise ValueError(f"espeak-ng has no voice {job['voice']!r} (espeak-ng --voices lists them)")
    lib.espeak_SetParameter(_RATE, int(job["wpm"]), 0)
    lib.espeak_SetParameter(_PITCH, int(job["pitch"]), 0)
    out = Path(job["out"])
    for i, text in enumerate(job["texts"]):
        audio.clear()
        phones.clear()
        data = text.encode()
        lib.espeak_Synth(ctypes.c_char_p(data), len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        with wave.open(str(out / f"{i}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(b"".join(audio))
        (out / f"{i}.json").write_text(json.dumps(phones))


if __name__ == "__main__":
    speak(json.loads(sys.stdin.read()))
