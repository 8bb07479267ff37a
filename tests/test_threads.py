"""A running call's threads: the model on half the cores unless told (live and serve loaded it on every core), and
the threads that run the networks on torch's thread count (``torch.set_num_threads`` reaches OpenMP only in the
thread that calls it; a thread started later got every core)."""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from fada_rt import live, serve
from fada_rt.api import StreamingAvatar
from fada_rt.assets import EXAMPLE_AUDIO, EXAMPLE_IMAGE
from fada_rt.backends.options import LoadOptions, default_threads, follow_torch_threads
from fada_rt.pipeline import AvatarPipeline
from fada_rt.streaming import StreamingSession

GOMP = sorted((Path(torch.__file__).parent / "lib").glob("libgomp*.so*"))


@pytest.fixture
def openmp_threads():
    """The calling thread's OpenMP thread count, read from the libgomp torch runs on."""
    if not GOMP:
        pytest.skip("this torch build does not ship libgomp")
    if os.environ.get("OMP_NUM_THREADS") == "1" or (os.cpu_count() or 1) < 2:
        pytest.skip("a new thread gets one OpenMP thread here anyway (OMP_NUM_THREADS=1 or one core)")
    return ctypes.CDLL(str(GOMP[0])).omp_get_max_threads


def in_new_thread(fn):
    out = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


def test_a_new_thread_follows_torch_only_when_asked(openmp_threads) -> None:
    torch.set_num_threads(1)
    assert openmp_threads() == 1
    assert in_new_thread(openmp_threads) == (int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count()))  # the bug
    assert in_new_thread(lambda: (follow_torch_threads(), openmp_threads())[1]) == 1


def test_the_avatar_worker_and_the_decode_thread_run_on_torchs_threads(shipped, openmp_threads,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, set[int]] = {"step": set(), "decode": set()}
    step, decode = StreamingSession.step, type(shipped.backend).decode

    def spy_step(self):
        seen["step"].add(openmp_threads())
        return step(self)

    def spy_decode(self, latents):
        seen["decode"].add(openmp_threads())
        return decode(self, latents)

    monkeypatch.setattr(StreamingSession, "step", spy_step)
    monkeypatch.setattr(type(shipped.backend), "decode", spy_decode)
    torch.set_num_threads(1)
    with StreamingAvatar(EXAMPLE_IMAGE, pipeline=shipped, output="crop", realtime=False) as avatar:
        avatar.push_audio(np.zeros(8000, np.float32), 16000)
        avatar.end_audio()
        frames = list(avatar.frames())
    assert len(frames) > 0
    assert seen["step"] == {1}
    c = shipped.config
    latents = torch.zeros(2, c.vae.latent_channels, c.latent_size, c.latent_size)
    assert shipped.backend.decode_async(latents)().shape == (2, 3, c.resolution, c.resolution)  # in its own thread
    assert seen["decode"] == {1}  # the worker's decodes and the decode thread's


def test_a_call_loads_on_half_the_cores_unless_told() -> None:
    cpu = LoadOptions()
    assert cpu.threads is None and cpu.for_a_call().threads == default_threads() >= 1
    assert LoadOptions(threads=2).for_a_call().threads == 2  # --threads wins
    assert LoadOptions(device="cuda").for_a_call().threads is None


class Loaded(Exception):
    pass


@pytest.mark.parametrize("argv, threads", [([], None), (["--threads", "2"], 2)])
def test_live_and_serve_load_the_model_for_a_call(monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                                 threads: int | None) -> None:
    """``fada_rt.live`` ran the model on every core (the libraries' choice), not on the call's threads."""
    seen: list[LoadOptions] = []

    def load(options: LoadOptions, **kw: object) -> None:
        seen.append(options)
        raise Loaded

    monkeypatch.setattr(AvatarPipeline, "load", load)
    with pytest.raises(Loaded):
        live.main(["--audio-file", str(EXAMPLE_AUDIO), "--no-preview", *argv])
    with pytest.raises(Loaded):
        serve.main(argv)
    assert [o.threads for o in seen] == [threads or default_threads()] * 2
