"""python -m fada_rt.serve at the server level: aiortc on both ends, in this process (the server on its own loop in a
thread; the client an aiortc peer sending fada_rt/examples/speech.wav through aiortc's MediaPlayer)."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("aiortc", reason="the serve extra (aiortc) is not installed")
aiohttp = pytest.importorskip("aiohttp", reason="the serve extra (aiohttp) is not installed")

from aiortc import RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.contrib.media import MediaPlayer  # noqa: E402
from aiortc.mediastreams import MediaStreamError  # noqa: E402

from fada_rt.assets import EXAMPLE_AUDIO, EXAMPLE_IMAGE  # noqa: E402
from fada_rt.media import read_audio, write_wav  # noqa: E402
from fada_rt.pipeline import AvatarPipeline  # noqa: E402
from fada_rt.serve import AvatarServer, BackgroundServer, check_offer  # noqa: E402
from fada_rt.serve_media import AUDIO_TIMEOUT  # noqa: E402

pytestmark = pytest.mark.slow
CLIENT_GAIN = 1 / np.sqrt(2)  # the test client's aiortc encoder upmixes the mono file to stereo at -3 dB
SECONDS = 2.5  # media collected per client after its first video frame (and 0.6 s after its first sound)


@pytest.fixture(scope="module")
def running() -> Iterator[BackgroundServer]:
    pipeline = AvatarPipeline.from_checkpoint(threads=1)
    portrait = pipeline.portrait(EXAMPLE_IMAGE)
    with BackgroundServer(AvatarServer(pipeline, portrait, max_sessions=1)) as running:
        yield running


@pytest.fixture(autouse=True)
def no_sessions_left(running: BackgroundServer) -> Iterator[None]:
    yield
    running.call(running.server.close_all())  # a failed test leaves none for the next


@dataclass
class Received:
    answer: dict[str, Any]
    video: list[Any] = field(default_factory=list)  # av.VideoFrame
    audio: list[Any] = field(default_factory=list)  # av.AudioFrame


async def post_offer(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(f"{url}/offer", data=json.dumps(body)) as response:
        return response.status, await response.json()


async def make_offer(pc: RTCPeerConnection) -> dict[str, str]:
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}


async def run_client(url: str, *, wav: Path = EXAMPLE_AUDIO, during: Any = None) -> Received:
    """Connect, send ``wav``, collect SECONDS of media after the first video frame and 0.6 s after the first
    sound (``during``: a coroutine function awaited meanwhile), then close the peer connection as a closed
    browser tab would."""
    pc = RTCPeerConnection()
    player = MediaPlayer(str(wav))
    pc.addTrack(player.audio)
    status, answer = await post_offer(url, await make_offer(pc))
    assert status == 200, answer
    received = Received(answer)
    tracks: dict[str, Any] = {}
    pc.on("track", lambda track: tracks.setdefault(track.kind, track))
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

    async def collect(kind: str, into: list[Any], first: asyncio.Event, stop: asyncio.Event) -> None:
        track = tracks[kind]
        while not stop.is_set():
            try:
                frame = await asyncio.wait_for(track.recv(), 30)
            except MediaStreamError:
                return
            into.append(frame)
            if kind == "video" or np.abs(frame.to_ndarray()).max() > 300:  # audio: a packet of sound, not idle
                first.set()

    first, sound, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(collect("video", received.video, first, stop)),
             asyncio.create_task(collect("audio", received.audio, sound, stop))]
    await asyncio.wait_for(first.wait(), 40)
    if during is not None:
        await during()
    await asyncio.sleep(SECONDS)
    await asyncio.wait_for(sound.wait(), 30)  # the model is slow on a busy CPU: wait for the sent sound to come back
    await asyncio.sleep(0.6)
    stop.set()
    for task in tasks:
        task.cancel()
    player.audio.stop()
    await pc.close()
    return received


def sessions(running: BackgroundServer) -> list[dict[str, Any]]:
    async def get() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as http, http.get(f"{running.url}/status") as response:
            return (await response.json())["sessions"]
    return asyncio.run(get())


def wait_until_no_sessions(running: BackgroundServer, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while sessions(running) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sessions(running) == [], "the server kept the session of a client that disconnected"


def heard(received: Received) -> np.ndarray:
    """The audio that came back, mono float at 48 kHz."""
    pcm = np.concatenate([f.to_ndarray().reshape(-1, len(f.layout.channels)).mean(axis=1) for f in received.audio])
    return pcm.astype(np.float64) / 32768.0


def loudest_rms(wave: np.ndarray, seconds: float = 0.2, rate: int = 48000) -> float:
    n = int(seconds * rate)
    return float(np.sqrt(np.convolve(wave ** 2, np.ones(n) / n, mode="valid").max()))


def dominant_hz(wave: np.ndarray, rate: int = 48000) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.fft.rfftfreq(wave.size, 1 / rate)[spectrum.argmax()])


def test_check_offer_names_what_is_wrong() -> None:
    from fada_rt.serve import OfferError

    with pytest.raises(OfferError, match=r'JSON \{"sdp"'):
        check_offer({"type": "offer"})
    with pytest.raises(OfferError, match="receives no video"):
        check_offer({"type": "offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\n"})
    with pytest.raises(OfferError, match="sends no audio"):
        check_offer({"type": "offer", "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n"})


def test_malformed_offers_are_refused_with_400(running: BackgroundServer) -> None:
    async def go() -> list[tuple[int, dict[str, Any]]]:
        async with aiohttp.ClientSession() as http, http.post(f"{running.url}/offer", data="not json") as response:
            results = [(response.status, await response.json())]
        bad_sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n"
        for body in ([1, 2], {"sdp": 3, "type": "offer"}, {"sdp": bad_sdp, "type": "answer"}, {"sdp": bad_sdp, "type": "offer"}):
            results.append(await post_offer(running.url, body))
        return results

    results = asyncio.run(go())
    assert [status for status, _ in results] == [400] * 5
    assert "not JSON" in results[0][1]["error"]
    assert "ICE username fragment" in results[-1][1]["error"]  # aiortc's reason, passed on
    assert sessions(running) == []


def test_clients_get_the_avatar_and_disconnects_free_their_session(running: BackgroundServer) -> None:
    server: AvatarServer = running.server
    height, width = server.portrait.image.shape[:2]
    refused: list[tuple[int, dict[str, Any]]] = []
    avatars: list[Any] = []

    async def while_connected() -> None:  # a second browser while the one session --max-sessions allows is open
        avatars.extend(s.avatar for s in server.sessions.values())
        extra = RTCPeerConnection()
        extra.addTrack(MediaPlayer(str(EXAMPLE_AUDIO)).audio)
        refused.append(await post_offer(running.url, await make_offer(extra)))
        await extra.close()

    first = asyncio.run(run_client(running.url, during=while_connected))
    answer = first.answer
    assert answer["type"] == "answer" and answer["session"] == 1
    assert "m=audio" in answer["sdp"] and "m=video" in answer["sdp"] and "a=candidate" in answer["sdp"]
    assert refused[0][0] == 503 and "--max-sessions" in refused[0][1]["error"]

    # the avatar's picture, at its size, stamped at 25 fps on the 90 kHz clock
    assert len(first.video) >= 10
    assert {(f.width, f.height) for f in first.video} == {(width, height)}
    steps = np.diff([f.pts for f in first.video])
    assert np.all(steps > 0) and np.all(steps % 3600 == 0)
    picture = first.video[-1].to_ndarray(format="rgb24").astype(np.float64)
    assert np.corrcoef(picture.ravel(), server.portrait.image.astype(np.float64).ravel())[0, 1] > 0.9

    # its audio: 48 kHz, 20 ms packets, and the speech it was sent (its loudest 0.6 s found in speech.wav)
    assert {f.sample_rate for f in first.audio} == {48000}
    audio_steps = np.diff([f.pts for f in first.audio])  # 20 ms packets; a jump: slots the avatar's clock skipped
    assert np.all(audio_steps > 0) and np.all(audio_steps % 960 == 0)
    assert np.all(audio_steps == 960) or avatars[0].stats["late_frames"] > 0
    level, sent = loudest_rms(heard(first)), loudest_rms(read_audio(EXAMPLE_AUDIO, sample_rate=48000).astype(np.float64))
    print(f"returned speech: loudest 0.2 s at RMS {level:.3f}; speech.wav's loudest {sent:.3f}")
    assert 0.1 * sent < level < sent  # speech came back (idle frames are silent), not louder than it went

    # the closed client's session is gone and its avatar closed; the next client gets a new one
    wait_until_no_sessions(running)
    assert avatars and avatars[0].next_frame(timeout=1) is None
    second = asyncio.run(run_client(running.url))
    assert second.answer["session"] == 2 and len(second.video) >= 10
    assert {(f.width, f.height) for f in second.video} == {(width, height)}
    wait_until_no_sessions(running)


def test_two_sessions_share_the_model(running: BackgroundServer, tmp_path: Path) -> None:
    """With --max-sessions 2, two clients at once each get their own avatar from the one model (its calls
    serialized by SharedPipeline's lock), each speaking what that client sent: one sends a 600 Hz tone, the
    other a 1500 Hz one, and each hears back its own."""
    server: AvatarServer = running.server
    height, width = server.portrait.image.shape[:2]
    tones = {600.0: tmp_path / "600.wav", 1500.0: tmp_path / "1500.wav"}
    t = np.arange(4 * 16000) / 16000
    for hz, path in tones.items():
        write_wav(path, 0.3 * np.sin(2 * np.pi * hz * t), sample_rate=16000)

    async def both() -> list[Received]:
        return list(await asyncio.gather(*(run_client(running.url, wav=path) for path in tones.values())))

    server.max_sessions = 2
    try:
        results = asyncio.run(both())
    finally:
        server.max_sessions = 1
    numbers = sorted(r.answer["session"] for r in results)  # either client may be answered first
    assert numbers == [numbers[0], numbers[0] + 1]
    for hz, received in zip(tones, results):
        assert len(received.video) >= 10 and {(f.width, f.height) for f in received.video} == {(width, height)}
        wave = heard(received)
        print(f"sent {hz:.0f} Hz, heard {dominant_hz(wave):.1f} Hz at RMS {loudest_rms(wave, 0.1):.3f}")
        assert dominant_hz(wave) == pytest.approx(hz, abs=5)
        assert loudest_rms(wave, 0.1) == pytest.approx(0.3 / np.sqrt(2) * CLIENT_GAIN, rel=0.2)
    wait_until_no_sessions(running)


def test_a_session_counts_once_while_its_answer_is_made(running: BackgroundServer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """With --max-sessions 2, a second offer that comes while the first session is registered but still making its
    answer is served: the opening session holds one place, not two (the race that made two browsers at once get
    HTTP 503). The first answer is held until the second offer was answered."""
    server: AvatarServer = running.server
    release, answering = threading.Event(), threading.Event()
    create_answer = RTCPeerConnection.createAnswer

    async def held_answer(pc: RTCPeerConnection) -> Any:
        if not answering.is_set():  # the first session only
            answering.set()
            await asyncio.to_thread(release.wait, 30)
        return await create_answer(pc)

    monkeypatch.setattr(RTCPeerConnection, "createAnswer", held_answer)

    async def two() -> list[tuple[int, dict[str, Any]]]:
        pcs = [RTCPeerConnection(), RTCPeerConnection()]
        for pc in pcs:
            pc.addTrack(MediaPlayer(str(EXAMPLE_AUDIO)).audio)
        first = asyncio.create_task(post_offer(running.url, await make_offer(pcs[0])))
        await asyncio.to_thread(answering.wait, 30)
        try:
            assert len(server.sessions) == 1  # registered, its answer not made yet
            second = await post_offer(running.url, await make_offer(pcs[1]))
        finally:
            release.set()
        results = [await first, second]
        for pc in pcs:
            await pc.close()
        return results

    server.max_sessions = 2
    try:
        results = asyncio.run(two())
    finally:
        server.max_sessions = 1
        running.call(server.close_all())
    assert [status for status, _ in results] == [200, 200], results
    assert sessions(running) == []


VANISHING_CLIENT = """
import asyncio, json, sys, urllib.request
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer

async def main(url, wav):
    pc = RTCPeerConnection()
    pc.addTrack(MediaPlayer(wav).audio)
    pc.addTransceiver("video", direction="recvonly")
    got = asyncio.Event()
    pc.on("track", lambda track: track.kind == "video" and asyncio.ensure_future(track.recv()).add_done_callback(
        lambda _: got.set()))
    await pc.setLocalDescription(await pc.createOffer())
    body = json.dumps({"sdp": pc.localDescription.sdp, "type": "offer"}).encode()
    answer = json.load(urllib.request.urlopen(urllib.request.Request(url + "/offer", data=body)))
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    await got.wait()
    print("streaming", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_a_client_that_vanishes_is_closed_after_the_audio_timeout(running: BackgroundServer,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A client killed mid-stream sends no goodbye at all (a crashed tab, a lost network): the server closes its
    session once no audio came for AUDIO_TIMEOUT seconds, before ICE's consent checks would (30 s)."""
    caplog.set_level(logging.INFO, logger="fada_rt.serve")
    server: AvatarServer = running.server
    client = subprocess.Popen([sys.executable, "-c", VANISHING_CLIENT, running.url, str(EXAMPLE_AUDIO)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None and client.stdout.readline().strip() == "streaming"
        (session,) = server.sessions.values()
    finally:
        client.kill()
        client.wait(10)
    killed = time.monotonic()
    wait_until_no_sessions(running, timeout=AUDIO_TIMEOUT + 15)
    print(f"closed {time.monotonic() - killed:.1f} s after the client was killed")
    assert session.avatar.next_frame(timeout=1) is None
    assert f"session {session.id} closed: no audio from the browser for {AUDIO_TIMEOUT:.0f} s" in caplog.text
