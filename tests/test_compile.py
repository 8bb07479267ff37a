"""torch.compile over the whole hot path and the chunk graph (fada_rt.backends.chunk_graph), traced on the CPU.

The CPU tests compile with a counting ``torch.compile`` backend over "aot_eager": the same Dynamo graphs and AOT
tracing as inductor, without generating kernels (minutes on 2 cores), so they check what can break a compiled run
(graph breaks, recompiles, a network left out) and its parity with eager. The GPU tests compile for real."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch._dynamo.backends.common import aot_autograd
from torch._functorch.aot_autograd import make_boxed_func

from benchmarks.machine import InstrumentedBackend, SpanTimer
from fada_rt.backends import LoadOptions, create_backend, load_options_from_args
from fada_rt.backends.torch_backend import TorchBackend
from fada_rt.checkpoint import save_model
from fada_rt.pipeline import AvatarPipeline
from tests.test_pipeline import face, fast_model, windows_for  # noqa: F401  (face: a fixture)


class CountingBackend:
    """A ``torch.compile`` backend that counts the graphs Dynamo hands it and runs them AOT-traced, eagerly."""

    def __init__(self) -> None:
        self.graphs: list[torch.fx.GraphModule] = []
        self._aot = aot_autograd(fw_compiler=lambda gm, _: make_boxed_func(gm.forward))

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):
        self.graphs.append(gm)
        return self._aot(gm, example_inputs)

    def calls(self, target: str) -> int:
        """Calls of modules/functions whose name contains ``target`` over every graph counted."""
        return sum(target in str(node.target) for gm in self.graphs for node in gm.graph.nodes)


def chunks(pipeline: AvatarPipeline, image: np.ndarray, n: int = 2, seconds: float = 0.64) -> list[np.ndarray]:
    avatar = pipeline.prepare(image)
    windows = windows_for(pipeline, seconds)
    state, out = pipeline.initial_state(avatar), []
    generator = torch.Generator().manual_seed(0)
    for i in range(n):
        frames, state = pipeline.generate(avatar, windows[:, 8 * i : 8 * (i + 1)], state, generator=generator)
        out.append(frames)
    return out


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_the_chunk_graph_is_one_graph_reused_by_every_chunk_and_equals_the_steps(face):  # noqa: F811
    """Six sampler steps, their PeRFlow updates and the decode: one Dynamo graph (fullgraph, so a break would be an
    error), compiled once and replayed by the next chunk, with the step-by-step pipeline's frames; the benchmark's
    probe counts its frame evaluations as the steps would."""
    counting = CountingBackend()
    model = fast_model()
    eager = chunks(AvatarPipeline(TorchBackend(model)), face)
    timer = SpanTimer(torch.device("cpu"))
    probed = InstrumentedBackend(TorchBackend(model, chunk_graph=True, compile_backend=counting), timer)
    graphed = chunks(AvatarPipeline(probed), face)  # type: ignore[arg-type]
    assert len(counting.graphs) == 1  # the second chunk reused it: no recompile
    graph = counting.graphs[0]
    steps = [n for n in graph.graph.nodes if "invoke_subgraph" in str(n.target)]
    assert len(steps) == 6 and len({n.args[0].target for n in steps}) == 1  # one network, compiled once, 6 steps
    assert len(graph.graph.nodes) > 100  # the updates and the decoder too, not a fragment
    for a, b in zip(eager, graphed, strict=True):
        assert a.shape == b.shape
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # uint8 levels (measured: 0)
    assert probed.nfe == 2 * 6 * 8  # 2 chunks x 6 steps x 8 frames
    assert set(timer.totals()) >= {"denoise", "conditions"}


def test_compile_covers_every_network_of_the_hot_path(face):  # noqa: F811
    """compile=True: the audio front-end, the audio tokens, the motion features, the denoiser and the decoder each
    run compiled (each call of the backend compiles a graph the first time) and equal eager."""
    counting = CountingBackend()
    model = fast_model()
    eager, compiled = TorchBackend(model), TorchBackend(model, compile=True, compile_backend=counting)
    pipeline = AvatarPipeline(eager)
    avatar = pipeline.prepare(face)
    wave = torch.sin(torch.linspace(0, 200, 8000))[None]  # (1, S) 0.5 s
    windows = eager.audio_features(wave)[:, :8]
    motion = pipeline.initial_state(avatar).motion_latents
    latents = torch.randn((8, 4, 16, 16), generator=torch.Generator().manual_seed(0))
    z, t = torch.randn((1, 8, 4, 16, 16), generator=torch.Generator().manual_seed(1)), torch.full((1,), 500.0)
    cfg = torch.tensor([[2.0, 1.5]])

    def denoise(backend):
        conditions = backend.conditions(avatar.reference, motion, windows)
        return backend.bind(conditions)(z, t, branches=("a",), cfg=cfg)

    calls = {"audio_features": lambda b: b.audio_features(wave), "audio_tokens": lambda b: b.audio_tokens(windows),
             "motion_features": lambda b: torch.cat([f.flatten() for f in b.motion_features(motion)]),
             "decode": lambda b: b.decode(latents), "denoiser": denoise}
    for name, call in calls.items():
        before = len(counting.graphs)
        out = call(compiled)
        assert len(counting.graphs) > before, f"{name} did not run compiled"
        torch.testing.assert_close(out, call(eager), rtol=1e-4, atol=1e-5, msg=name)


def test_chunk_graph_is_a_torch_load_option(tmp_path):
    import argparse

    from fada_rt.backends import add_load_options

    parser = argparse.ArgumentParser()
    add_load_options(parser)
    options = load_options_from_args(parser.parse_args(["--chunk-graph"]))
    assert options.chunk_graph and not options.compile
    with pytest.raises(ValueError, match="chunk_graph are torch-backend options"):
        LoadOptions("onnxruntime", engine_dir=tmp_path, chunk_graph=True)
    save_model(fast_model(), tmp_path / "fast", role="student")
    backend = create_backend(LoadOptions(checkpoint=tmp_path / "fast", chunk_graph=True))
    assert backend.chunk_graph


# ---- GPU (CUDA): inductor for real, one CUDA graph per chunk --------------------------------------------------

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@gpu
def test_cuda_chunk_graph_replays_one_cuda_graph_per_chunk_like_eager(face, tmp_path):  # noqa: F811
    save_model(fast_model(), tmp_path / "fast", role="student")
    half = LoadOptions(checkpoint=tmp_path / "fast", device="cuda", dtype="float16")
    eager = chunks(AvatarPipeline(create_backend(half)), face, n=3)
    graphed = chunks(AvatarPipeline(create_backend(half.replace(compile=True, chunk_graph=True, cuda_graphs=True))),
                     face, n=3)
    for a, b in zip(eager, graphed, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 2
