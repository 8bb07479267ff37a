"""The preview page served by the live process on 127.0.0.1: page, frames on the audio clock, stats."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import make_tiny_model, randomize_zero_init
from PIL import Image

from fada_rt.backends.torch_backend import TorchBackend
from fada_rt.live import run_live
from fada_rt.live_sources import FileSource
from fada_rt.media import write_wav
from fada_rt.pipeline import AvatarPipeline
from fada_rt.preview import PreviewServer


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


class FakeClock:
    def __init__(self) -> None:
        self.t = 50.0

    def __call__(self) -> float:
        return self.t


def test_preview_serves_page_frames_and_stats():
    clock = FakeClock()
    with PreviewServer(port=0, size=96, delay=0.3, clock=clock) as server:
        assert server.url.startswith("http://127.0.0.1:")
        status, ctype, body = get(server.url)
        assert status == 200 and ctype.startswith("text/html")
        assert b"frame.jpg" in body and b"stats.json" in body and b"width:96px" in body
        assert get(server.url + "frame.jpg")[0] == 503  # nothing generated yet
        assert get(server.url + "nope")[0] == 404

        frames = [np.full((64, 64, 3), 30 * k, np.uint8) for k in range(4)]
        for k, frame in enumerate(frames):  # a chunk arrives at once at t = 50
            server.update(frame, k / 25, {"frames": k + 1, "fps": 25.0, "av_offset_ms_last": 10.0 * k})
        status, ctype, body = get(server.url + "frame.jpg")
        image = np.asarray(Image.open(io.BytesIO(body)))
        assert status == 200 and ctype == "image/jpeg" and image.shape == (96, 96, 3)
        assert abs(int(image.mean()) - 0) <= 3  # frame 0 is shown first (pts 0 is due at 50 + 0.3)
        clock.t = 50.3 + 2 / 25 + 0.001  # frame 2 is due, frame 3 not yet
        image = np.asarray(Image.open(io.BytesIO(get(server.url + "frame.jpg")[2])))
        assert abs(int(image.mean()) - 60) <= 3
        stats = json.loads(get(server.url + "stats.json")[2])
        # the producer's stats as given with the last frame (fada_rt.live's FrameTimer measures the offsets)
        assert stats == {"frames": 4, "fps": 25.0, "av_offset_ms_last": 30.0, "late_frames": 0}

        clock.t = 60.0  # frame 4 arrives 9.54 s after its due time: late, shown at once
        server.update(frames[0], 4 / 25, {"frames": 5})
        get(server.url + "frame.jpg")
        stats = json.loads(get(server.url + "stats.json")[2])
        assert stats["late_frames"] == 1 and stats["frames"] == 5


def test_live_run_serves_the_preview_while_running(tmp_path, capsys):
    model = make_tiny_model(seed=8).make_student("layer_tokens")
    randomize_zero_init(model)
    pipeline = AvatarPipeline(TorchBackend(model))
    write_wav(tmp_path / "a.wav", (np.random.default_rng(0).standard_normal(8000) * 0.1).astype(np.float32))
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tmp_path / "face.png")
    fetched = {}

    def on_frame(frame, pts):
        if not fetched:
            url = capsys.readouterr().out.split("preview: ")[1].split()[0]
            fetched["page"] = get(url)[0]
            fetched["stats"] = json.loads(get(url + "stats.json")[2])
            fetched["frame"] = get(url + "frame.jpg")[0]

    result = run_live(pipeline=pipeline, image=tmp_path / "face.png", crop="centre", source=FileSource(tmp_path / "a.wav",
                      speed=None), preview=True, port=0, on_frame=on_frame)
    assert result.stats["speech_frames"] == 13 and result.frames >= 13
    assert fetched["page"] == 200 and fetched["frame"] == 200
    assert fetched["stats"]["frames"] >= 1 and "latency_ms_last" in fetched["stats"]


def test_busy_port_is_a_clear_error():
    with PreviewServer(port=0) as first:
        port = int(first.url.rsplit(":", 1)[1].strip("/"))
        with pytest.raises(ValueError, match="pass --port 0 for any free port, or --no-preview"):
            PreviewServer(port=port)
