"""``python -m fada_rt.serve``: the avatar in a browser over WebRTC (aiortc + aiohttp; extra ``serve``).

::

    python -m fada_rt.serve [--host 127.0.0.1] [--port 8080] [--image PATH] [--checkpoint DIR] [--threads N]
                            [--max-sessions N] [--max-latency S]

Open http://127.0.0.1:8080/, press *Start* (the microphone) or pick an audio file: the page sends that audio to the
server, and the avatar speaking it comes back as video with its audio (the page is ``fada_rt/web/index.html``).

Endpoints: ``GET /`` the page; ``POST /offer`` the signalling: a JSON ``{"sdp": ..., "type": "offer"}`` whose offer
sends audio and receives video (the page's ``addTransceiver("video", {direction: "recvonly"})``), answered with
``{"sdp": ..., "type": "answer", "session": id}`` (ICE candidates inside the SDP, no trickle); a malformed offer is
HTTP 400 and an offer beyond ``--max-sessions`` HTTP 503, each with a one-line reason; ``GET /status`` the sessions
as JSON.

One session per peer connection: a :class:`~fada_rt.api.StreamingAvatar` (``realtime=True``: paced at the model's
fps, idle when no audio comes) on the one loaded model (:class:`~fada_rt.serve_media.SharedPipeline`: model calls of
different sessions are serialized by a lock, so sessions share its throughput; ``--max-sessions`` defaults to 1
because on a CPU one session already takes the model's whole real-time budget). The browser's audio track is
decoded by aiortc and pushed as it comes (all of it is speech for the avatar: it mirrors what it hears); speech that
waits longer than ``--max-latency`` for the model is skipped unmade, so a model slower than real time stays live.
The frames go back as a video track and their audio as an audio track, both stamped from the frame's pts
(:mod:`fada_rt.serve_media`). Once a second the server sends the avatar's stats on the data channel the page opens;
the page sends back the glass-to-glass latency it measured, which the server logs. The page measures it with tone
bursts: every 2 s it adds a 120 ms tone to the audio it sends, and the time from the burst entering the connection
to the same burst coming back in the avatar's audio (which the browser plays in sync with its video) is read off one
AudioContext clock, by the same AudioWorklet detector on both sides (details in the page's header comment; a 500 ms
DelayNode in place of the server measures 501 ms). A session ends when its peer connection closes or fails (the page closes it when its tab is
closed), when the page's data channel closes, when the browser's audio track ends or sends nothing for 10 s (a
page sends silence while it is open, so a crashed tab or a lost network shows there before ICE gives up, after
30 s), or when it is not connected within 30 s; its avatar is closed and the others go on.

The server binds 127.0.0.1. Another ``--host`` makes it, and the model, reachable from the network (it warns);
browsers also give the microphone only to https pages or localhost, so put a TLS proxy in front of it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

try:
    from aiohttp import web
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.sdp import SessionDescription
except ImportError as _err:  # the optional extra
    raise ImportError(f"python -m fada_rt.serve needs aiortc and aiohttp ({_err}): pip install -e \".[serve]\"") from _err

from fada_rt.api import StreamingAvatar
from fada_rt.face import OutputMode, Portrait
from fada_rt.pipeline import AvatarPipeline
from fada_rt.serve_media import AUDIO_RATE, AvatarOutput, Session, SharedPipeline

DESCRIPTION = "The avatar in a browser over WebRTC: a page on 127.0.0.1 that sends the microphone or an audio file."
DEFAULT_PORT = 8080
DEFAULT_MAX_LATENCY = 1.0  # seconds of speech allowed to wait for the model (as fada_rt.live)
CONNECT_TIMEOUT = 30.0  # seconds from the answer to a connected peer connection
PAGE = Path(__file__).resolve().parent / "web" / "index.html"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SDP_ERRORS = (ValueError, AssertionError, IndexError, KeyError, TypeError)  # what aiortc raises on a bad SDP

log = logging.getLogger("fada_rt.serve")  # the sessions' news (opened, closed and why, the page's latency)


class OfferError(Exception):
    """A request /offer cannot serve; ``status`` is the HTTP status, the message says why and what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_offer(body: Any) -> str:
    """The SDP of an /offer body, after checking it is an offer that sends audio and receives video."""
    if not isinstance(body, dict) or not isinstance(body.get("sdp"), str) or body.get("type") != "offer":
        raise OfferError(400, 'the body must be JSON {"sdp": "<the offer SDP>", "type": "offer"} '
                              "(the browser's pc.localDescription after setLocalDescription(createOffer()))")
    try:
        media = SessionDescription.parse(body["sdp"]).media
    except SDP_ERRORS as err:
        raise OfferError(400, f"the offer's SDP does not parse ({type(err).__name__}: {err}): send "
                              "pc.localDescription.sdp unchanged") from err
    kinds = {m.kind: m.direction or "sendrecv" for m in media}  # no direction attribute: sendrecv (RFC 3264)
    if kinds.get("audio") not in ("sendrecv", "sendonly"):
        raise OfferError(400, "the offer sends no audio: add the microphone's (or a WebAudio) track with "
                              "pc.addTrack before createOffer")
    if kinds.get("video") not in ("sendrecv", "recvonly"):
        raise OfferError(400, "the offer receives no video: add pc.addTransceiver('video', {direction: 'recvonly'}) "
                              "before createOffer")
    return body["sdp"]


class AvatarServer:
    """The aiohttp application of ``python -m fada_rt.serve`` around one loaded model (see the module docstring)."""

    def __init__(self, pipeline: AvatarPipeline, portrait: Portrait, *, max_sessions: int = 1,
                 max_latency: float | None = DEFAULT_MAX_LATENCY, output: OutputMode = "full", seed: int = 0) -> None:
        if max_sessions < 1:
            raise ValueError(f"--max-sessions must be >= 1, got {max_sessions}")
        if max_latency is not None and max_latency <= 0:
            raise ValueError(f"--max-latency must be > 0 seconds (or 0 on the command line: never skip), got {max_latency}")
        self.pipeline = pipeline if isinstance(pipeline, SharedPipeline) else SharedPipeline(pipeline)
        self.portrait, self.output, self.seed = portrait, output, seed
        self.max_sessions, self.max_latency = max_sessions, max_latency
        self.sessions: dict[int, Session] = {}
        self.opened = 0
        self._slots: set[object] = set()  # one per session opening or open: what --max-sessions counts
        self.pipeline.prepare(portrait)  # cached: sessions start without the reference pass

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.index)
        app.router.add_post("/offer", self.offer)
        app.router.add_get("/status", self.status)
        app.router.add_get("/favicon.ico", self.no_icon)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(PAGE, headers={"Cache-Control": "no-store"})

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.close_all()

    async def no_icon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)  # no icon, and no 404 in the browser's console

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response({"max_sessions": self.max_sessions, "opened": self.opened,
                                  "sessions": [s.describe() for s in self.sessions.values()]})

    async def offer(self, request: web.Request) -> web.Response:
        try:
            try:
                body = await request.json()
            except json.JSONDecodeError as err:
                raise OfferError(400, f"the body is not JSON ({err}): send {{\"sdp\": ..., \"type\": \"offer\"}}") from err
            sdp = check_offer(body)
            if len(self._slots) >= self.max_sessions:
                raise OfferError(503, f"the server is busy: {self.max_sessions} session(s) open, the most "
                                      "--max-sessions allows; close one or try again later")
            slot = object()  # taken until the session closes (or its opening fails): a session counts once
            self._slots.add(slot)
            try:
                session = await self.open(sdp, slot)
            except BaseException:
                self._slots.discard(slot)
                raise
        except OfferError as err:
            log.warning("/offer refused (HTTP %d): %s", err.status, err)
            return web.json_response({"error": str(err)}, status=err.status)
        answer = session.pc.localDescription
        return web.json_response({"sdp": answer.sdp, "type": answer.type, "session": session.id})

    async def open(self, sdp: str, slot: object) -> Session:
        """A session for an offer checked by :func:`check_offer`: its peer connection answered, its avatar running;
        ``slot`` is released when it closes."""
        pc = RTCPeerConnection()
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except SDP_ERRORS as err:
            await pc.close()
            raise OfferError(400, f"the offer cannot be used ({type(err).__name__}: {err}): send the browser's "
                                  "pc.localDescription after ICE gathering completed") from err
        try:
            avatar = await asyncio.to_thread(StreamingAvatar, self.portrait, pipeline=self.pipeline,
                                             output=self.output, audio_rate=AUDIO_RATE, realtime=True,
                                             max_latency=self.max_latency, seed=self.seed)
        except BaseException:
            await pc.close()
            raise
        self.opened += 1
        output = AvatarOutput(avatar, asyncio.get_running_loop())
        session = Session(self.opened, pc, avatar, output, slot=slot)
        self.sessions[session.id] = session
        pc.addTrack(output.video)
        pc.addTrack(output.audio)

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            session.channel = channel
            channel.on("message", session.on_message)

            @channel.on("close")
            async def on_close() -> None:  # the tab went away (its SCTP association aborted): faster than ICE
                await self.close_session(session, "the page's data channel closed")

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("session %d: connection %s", session.id, pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                await self.close_session(session, f"the peer connection {pc.connectionState}")

        try:
            await pc.setLocalDescription(await pc.createAnswer())
        except SDP_ERRORS as err:
            await self.close_session(session, "no answer")
            raise OfferError(400, f"no answer to this offer ({type(err).__name__}: {err}): the browser must offer "
                                  "Opus audio and VP8 or H.264 video") from err
        output.start()
        audio = [t.receiver.track for t in pc.getTransceivers() if t.kind == "audio"]
        session.tasks = [asyncio.create_task(self._watch(session, audio[0])), asyncio.create_task(session.report()),
                         asyncio.create_task(self._deadline(session)), asyncio.create_task(self._ended(session))]
        log.info("session %d opened (%d of at most %d)", session.id, len(self.sessions), self.max_sessions)
        return session

    async def _watch(self, session: Session, track: Any) -> None:
        reason = await session.receive(track)
        await self.close_session(session, reason)

    async def _ended(self, session: Session) -> None:
        await session.output.ended.wait()
        await self.close_session(session, f"the avatar failed: {session.output.error}" if session.output.error
                                 else "the avatar's stream ended")

    async def _deadline(self, session: Session) -> None:
        await asyncio.sleep(CONNECT_TIMEOUT)
        if session.pc.connectionState != "connected":
            await self.close_session(session, f"not connected within {CONNECT_TIMEOUT:.0f} s")

    async def close_session(self, session: Session, reason: str) -> None:
        """Close one session (its avatar, tracks and peer connection); the others go on. It stays in
        :attr:`sessions` until it is closed. Safe to call twice, and from the session's own tasks."""
        session.closed = True
        if session.closing is None:
            session.closing = asyncio.ensure_future(self._close(session, reason))
        await asyncio.shield(session.closing)

    async def _close(self, session: Session, reason: str) -> None:
        for task in session.tasks:  # a task that asked for the close waits on it shielded: the close goes on
            task.cancel()
        try:
            await asyncio.to_thread(session.avatar.close)
            await asyncio.to_thread(session.output.join, 10.0)
            await session.pc.close()
        finally:
            self.sessions.pop(session.id, None)
            self._slots.discard(session.slot)
        log.info("session %d closed: %s (%d frames sent)", session.id, reason, session.output.frames)

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close_session(s, "server shutting down") for s in list(self.sessions.values())))


class BackgroundServer:
    """An :class:`AvatarServer` served on its own event loop in a thread (tests, notebooks); ``port=0``: a free one.

    ``with BackgroundServer(server) as running: open(running.url)``."""

    def __init__(self, server: AvatarServer, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server, self.host, self.port = server, host, port
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fada-serve", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"the server did not start on {self.host}:{self.port}: {self._error}") from self._error
        return self

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the server's loop (e.g. ``server.close_all()``) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self._runner is not None and self._thread.is_alive():
            self.call(self._runner.cleanup())
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self._runner, self.port = self.loop.run_until_complete(_start(self.server, self.host, self.port))
        except OSError as err:
            self._error = err
        self._ready.set()
        if self._error is None:
            self.loop.run_forever()
        self.loop.close()


async def _start(server: AvatarServer, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(server.app())
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, runner.addresses[0][1]


# ---- CLI ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from fada_rt.generate import add_model_args, add_portrait_args
    from fada_rt.live import LIVE_MAX_SIDE

    p = argparse.ArgumentParser(prog="python -m fada_rt.serve", description=DESCRIPTION)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s; anything else makes "
                   "the server and the model reachable from the network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s; 0: any free port)")
    p.add_argument("--image", default=None, help="portrait image (default: fada_rt/examples/face.png)")
    p.add_argument("--max-sessions", type=int, default=1, help="browser sessions at once; more get HTTP 503. They "
                   "share the model, one chunk at a time (default: %(default)s)")
    p.add_argument("--max-latency", type=float, default=DEFAULT_MAX_LATENCY, help="seconds of speech allowed to "
                   "wait for the model; more is skipped unmade (0: never; default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise (default: %(default)s)")
    add_portrait_args(p, max_side=LIVE_MAX_SIDE)
    add_model_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    from fada_rt.assets import example_image
    from fada_rt.backends import BackendUnavailable
    from fada_rt.generate import pipeline_from_args

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_sessions < 1:
        parser.error(f"--max-sessions must be >= 1, got {args.max_sessions}")
    if args.max_latency < 0:
        parser.error(f"--max-latency must be >= 0 seconds (0: never skip speech), got {args.max_latency}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    if args.host not in LOOPBACK:
        print(f"warning: --host {args.host} makes this server, and the model behind it, reachable from the network: "
              f"anyone who reaches {args.host}:{args.port} can open sessions", file=sys.stderr)
    try:
        pipeline = pipeline_from_args(args, call=True)
        image = args.image if args.image is not None else example_image()
        portrait = pipeline.portrait(image, crop=args.crop, face_index=args.face_index, max_side=args.max_side)
        server = AvatarServer(pipeline, portrait, max_sessions=args.max_sessions, max_latency=args.max_latency or None,
                              output=args.output, seed=args.seed)
        asyncio.run(_serve_forever(server, args.host, args.port))
    except (ValueError, FileNotFoundError, BackendUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the port is taken, the address is not this machine's
        print(f"error: cannot serve on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    return 0


async def _serve_forever(server: AvatarServer, host: str, port: int) -> None:
    runner, port = await _start(server, host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"serving the avatar on http://{shown}:{port}/ (Ctrl-C to stop)", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)  # a service manager's stop: close cleanly
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await runner.cleanup()  # closes every session
    print("stopped", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
