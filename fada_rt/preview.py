"""The live preview page: a tiny threaded stdlib HTTP server on 127.0.0.1 (docs/design.md §4).

Routes: ``/`` the page, ``/frame.jpg`` the frame due now (JPEG), ``/stats.json`` the live stats
(fps, latency, dropped frames, A/V offset, ...). The page polls both; no dependencies beyond Pillow.

Frames are played out on their own clock: the first frame fixes ``anchor = arrival - pts + delay``, and
frame ``pts`` is due at ``anchor + pts`` (:class:`~fada_rt.api.StreamingAvatar` already paces its frames,
so ``fada_rt.live`` uses no delay). A frame that arrives after its due time is shown at once;
``late_frames`` counts them. The stats shown are the producer's (:meth:`PreviewServer.update`); the live
stream's latency and A/V offset are measured per frame by :class:`FrameTimer`, with or without this page.
"""

from __future__ import annotations

import io
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>fada-rt live</title>
<style>
 body { background:#111; color:#ddd; font:14px system-ui, sans-serif; margin:2em; }
 img { width:{size}px; height:{size}px; image-rendering:auto; background:#000; display:block; }
 table { margin-top:1em; border-collapse:collapse; } td { padding:2px 12px 2px 0; }
 td:last-child { text-align:right; font-variant-numeric:tabular-nums; }
</style></head><body>
<h3>fada-rt live preview</h3>
<img id="frame" alt="waiting for the first frame...">
<table id="stats"></table>
<script>
const img = document.getElementById("frame"), table = document.getElementById("stats");
let busy = false;
async function frame() {
  if (busy) return; busy = true;
  try {
    const r = await fetch("frame.jpg?t=" + Date.now(), {cache: "no-store"});
    if (r.ok) { const url = URL.createObjectURL(await r.blob()); const old = img.src; img.src = url;
                if (old.startsWith("blob:")) URL.revokeObjectURL(old); }
  } catch (e) {} finally { busy = false; }
}
async function stats() {
  try {
    const s = await (await fetch("stats.json", {cache: "no-store"})).json();
    table.innerHTML = Object.entries(s).map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join("");
  } catch (e) {}
}
setInterval(frame, 40); setInterval(stats, 500);
</script></body></html>
"""


def fit_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) scaled so the long side is ``side``, aspect kept."""
    f = side / max(width, height)
    return max(1, round(width * f)), max(1, round(height * f))


class PreviewServer:
    """Serve the latest due frame (its long side ``size`` px) and stats; :meth:`update` is called by the frame loop."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, size: int = 256, delay: float = 0.32,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.delay = delay
        self.clock = clock
        self._lock = threading.Lock()
        self._queue: deque[tuple[float, np.ndarray]] = deque()  # (due time, frame)
        self._current: np.ndarray | None = None
        self._current_id = -1
        self._jpeg: tuple[int, bytes] | None = None
        self._frame_id = 0
        self._anchor: float | None = None
        self._stats: dict[str, Any] = {}
        self.late_frames = 0
        try:
            self._server = ThreadingHTTPServer((host, port), _handler(self))
        except OSError as err:
            raise ValueError(f"cannot serve the preview on {host}:{port} ({err}); pass --port 0 for any free "
                             f"port, or --no-preview") from err
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fada-preview", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> str:
        self._thread.start()
        return self.url

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> PreviewServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- producer side --------------------------------------------------------------------------
    def update(self, frame: np.ndarray, pts: float, stats: dict[str, Any] | None = None) -> None:
        """Queue a frame due at ``pts`` on the play-out clock; ``stats``: what the page shows from now on."""
        now = self.clock()
        with self._lock:
            if self._anchor is None:
                self._anchor = now - pts + self.delay
            due = self._anchor + pts
            if now - due > 0:
                self.late_frames += 1
            self._queue.append((due, frame))
            if stats is not None:
                self._stats = dict(stats)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**self._stats, "late_frames": self.late_frames}

    # ---- consumer side --------------------------------------------------------------------------
    def current_frame(self) -> tuple[int, np.ndarray] | None:
        """The latest frame that is due (frames not yet due wait in the queue)."""
        now = self.clock()
        with self._lock:
            while self._queue and (self._queue[0][0] <= now or self._current is None):
                _, self._current = self._queue.popleft()
                self._current_id += 1
            if self._current is None:
                return None
            return self._current_id, self._current

    def jpeg(self) -> bytes | None:
        current = self.current_frame()
        if current is None:
            return None
        ident, frame = current
        cached = self._jpeg
        if cached is not None and cached[0] == ident:
            return cached[1]
        buf = io.BytesIO()
        Image.fromarray(frame).resize(fit_size(frame.shape[1], frame.shape[0], self.size),
                                      Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
        self._jpeg = (ident, buf.getvalue())
        return self._jpeg[1]


# ---- the stream's timing -------------------------------------------------------------------------


class _Series:
    def __init__(self) -> None:
        self.n, self.sum, self.max, self.last = 0, 0.0, -math.inf, math.nan

    def add(self, value: float) -> None:
        self.n, self.sum, self.max, self.last = self.n + 1, self.sum + value, max(self.max, value), value

    def summary(self, name: str) -> dict[str, float | None]:
        """``{name}_ms_{last,mean,max}`` in milliseconds; None when nothing was added."""
        values = (self.last, self.sum / self.n, self.max) if self.n else (None, None, None)
        return {f"{name}_ms_{k}": None if v is None else round(v * 1000, 1)
                for k, v in zip(("last", "mean", "max"), values)}


class FrameTimer:
    """Per-frame latency and A/V offset of the emitted stream, in wall seconds on one clock (the avatar's).

    * latency of a speech frame = emitted - ``captured_at`` (when its audio was captured, i.e. pushed): how long
      the voice waited for its picture. Idle frames have none.
    * A/V offset of a frame = (emitted - first emitted) - (pts - first pts): how far the picture trails an audio
      clock that starts with the first frame and plays each frame's audio at its ``pts`` (a sound card fed the
      frames' audio). Stalls (the model could not keep up) add to it and stay; a positive value: picture late.

    ``emitted``: when the frame left :meth:`~fada_rt.api.StreamingAvatar.next_frame` (``fada_rt.live`` shows it
    on this page and records it then). :meth:`stats` gives ``{latency,av_offset}_ms_{last,mean,max}`` over the
    frames since the last ``reset`` (a report interval), or over the whole run (``total=True``); None where there
    were none.
    """

    def __init__(self) -> None:
        self._start: tuple[float, float] | None = None  # (emitted, pts) of the first frame
        self._interval = {"latency": _Series(), "av_offset": _Series()}
        self._total = {"latency": _Series(), "av_offset": _Series()}

    def add(self, *, pts: float, emitted: float, captured_at: float | None) -> None:
        if self._start is None:
            self._start = (emitted, pts)
        values = {"av_offset": (emitted - self._start[0]) - (pts - self._start[1]),
                  "latency": None if captured_at is None else emitted - captured_at}
        for name, value in values.items():
            if value is not None:
                self._interval[name].add(value)
                self._total[name].add(value)

    def stats(self, *, total: bool = False, reset: bool = False) -> dict[str, float | None]:
        series = self._total if total else self._interval
        out = {k: v for name, s in series.items() for k, v in s.summary(name).items()}
        if reset:
            self._interval = {name: _Series() for name in self._interval}
        return out


class StatsLog:
    """``fada_rt.live --stats-jsonl PATH``: the reports as JSON lines, for programs (``benchmarks.soak``).

    The file is created (emptied) at once, so an unwritable path fails before the model loads; each
    :meth:`write` appends one object ``{"wall": time.time(), "kind": ..., **stats}`` and closes the file
    again, so a reader sees every line as soon as it is written and the log holds no descriptor open.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.write_text("")
        except OSError as err:
            raise ValueError(f"--stats-jsonl {path}: cannot write it ({err.strerror or err}); choose a writable "
                             f"file") from err

    def write(self, stats: dict[str, Any], *, kind: str = "interval", **extra: Any) -> None:
        line = json.dumps({"wall": round(time.time(), 3), "kind": kind, **extra, **stats})
        with self.path.open("a") as f:
            f.write(line + "\n")


def _handler(preview: PreviewServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                self._send(200, "text/html; charset=utf-8", PAGE.replace("{size}", str(preview.size)).encode())
            elif path == "/frame.jpg":
                data = preview.jpeg()
                if data is None:
                    self._send(503, "text/plain", b"no frame yet")
                else:
                    self._send(200, "image/jpeg", data)
            elif path == "/stats.json":
                self._send(200, "application/json", json.dumps(preview.stats()).encode())
            else:
                self._send(404, "text/plain", b"not found")

        def _send(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # keep the terminal for stats
            return

    return Handler
