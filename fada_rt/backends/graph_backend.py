"""A :class:`~fada_rt.backends.base.Backend` over exported graphs (onnxruntime, TensorRT).

The concrete backends only say how to run one graph (a :class:`GraphRunner`: named float32/bool
tensors in, named tensors out); everything else is here, shared: feeding each graph in pieces of
its static row count (:func:`run_rows`), the weight-free audio front-ends in torch, and binding a
chunk's conditions to the denoiser graph through :class:`~fada_rt.models.fada.BranchedDenoiser`,
the same branch tiling the torch backend uses (docs/design.md §4).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from fada_rt.backends.base import Backend
from fada_rt.backends.graphs import GraphSpec, default_graphs, denoiser_feeds, layer_shapes
from fada_rt.config import ModelConfig
from fada_rt.models.audio import MelFrontend, num_video_frames, window_features
from fada_rt.models.fada import BranchedDenoiser, ChunkConditions, ReferenceCache

_TORCH_DTYPES = {"float32": torch.float32, "bool": torch.bool}


class GraphRunner(Protocol):
    """Runs one exported graph on exactly ``spec.batch`` rows."""

    spec: GraphSpec

    def __call__(self, feeds: dict[str, Tensor]) -> dict[str, Tensor]: ...


def run_rows(runner: GraphRunner, feeds: dict[str, Tensor]) -> dict[str, Tensor]:
    """Run a static-row graph on any number of rows N >= 1.

    The rows are split into pieces of ``spec.batch``; the last piece is padded by repeating its
    last row and the padded outputs are dropped. Rows of every graph are independent, so this is
    exact. Inputs are checked against the spec (names, trailing static dims, dtypes).
    """
    spec = runner.spec
    if set(feeds) != set(spec.input_names):
        raise ValueError(f"graph {spec.name!r} takes inputs {sorted(spec.input_names)}, got {sorted(feeds)}")
    rows = {t.shape[0] for t in feeds.values()}
    if len(rows) != 1:
        raise ValueError(f"graph {spec.name!r}: inputs disagree on the number of rows: "
                         f"{ {k: tuple(v.shape) for k, v in feeds.items()} }")
    n = rows.pop()
    if n < 1:
        raise ValueError(f"graph {spec.name!r} needs at least one row")
    clean = {}
    for t in spec.inputs:
        x = feeds[t.name]
        trailing = t.shape[1:]
        if x.dim() != len(t.shape) or any(isinstance(d, int) and d != s for d, s in zip(trailing, x.shape[1:])):
            raise ValueError(f"graph {spec.name!r}: input {t.name} must have shape (N, {', '.join(map(str, trailing))})"
                             f", got {tuple(x.shape)}")
        clean[t.name] = x.to(_TORCH_DTYPES[t.dtype]).contiguous()
    b = spec.batch
    pieces: dict[str, list[Tensor]] = {name: [] for name in spec.output_names}
    for start in range(0, n, b):
        stop = min(start + b, n)
        piece = {k: _pad_rows(v[start:stop], b) for k, v in clean.items()}
        out = runner(piece)
        for name in spec.output_names:
            pieces[name].append(out[name][: stop - start])
    return {k: v[0] if len(v) == 1 else torch.cat(v) for k, v in pieces.items()}


def _pad_rows(x: Tensor, rows: int) -> Tensor:
    missing = rows - x.shape[0]
    if missing == 0:
        return x
    return torch.cat([x, x[-1:].expand(missing, *x.shape[1:])])


class GraphDenoiser:
    """A denoiser graph behind :class:`~fada_rt.models.denoiser.DenoisingUNet`'s forward signature."""

    def __init__(self, runner: GraphRunner, *, cfg_conditioned: bool) -> None:
        self.runner = runner
        self.cfg_conditioned = cfg_conditioned

    def __call__(
        self,
        sample: Tensor,
        timestep: Tensor,
        audio_tokens: Tensor,
        ref_k: Sequence[Tensor],
        ref_v: Sequence[Tensor],
        motion: Sequence[Tensor],
        ref_mask: Tensor | None = None,
        cfg: Tensor | None = None,
    ) -> Tensor:
        """Same contract as ``DenoisingUNet.forward``: (B, F, C, h, w) -> eps (B, F, C, h, w)."""
        spec = self.runner.spec
        b = sample.shape[0]
        if self.cfg_conditioned and cfg is None:
            raise ValueError("this student is CFG-conditioned: pass cfg=(B, 2) scales")
        if not self.cfg_conditioned and cfg is not None:
            raise ValueError("this denoiser takes no cfg scales (it is not CFG-conditioned)")
        if ref_mask is not None and not spec.has_input("ref_mask"):
            if not bool(ref_mask.all()):
                raise ValueError("this denoiser graph was exported without the reference-null branch (no ref_mask "
                                 "input, the fast student's profile); export with --denoiser-batch 3 to run branch 'b'")
            ref_mask = None
        if ref_mask is None and spec.has_input("ref_mask"):
            ref_mask = torch.ones(b, dtype=torch.bool, device=sample.device)
        per_frame = timestep.reshape(b, -1).expand(b, sample.shape[1])  # (B, F): a clip's timestep to each frame
        feeds = denoiser_feeds(spec, sample, per_frame, audio_tokens, ref_k, ref_v, motion, ref_mask, cfg)
        return run_rows(self.runner, feeds)["eps"]


class GraphBackend(Backend):
    """The Backend interface over a set of graph runners (one per exported graph)."""

    static_frames = True

    def __init__(self, config: ModelConfig, runners: dict[str, GraphRunner], *, device: torch.device | str) -> None:
        super().__init__(config, device=torch.device(device), dtype=torch.float32)
        needed = set(default_graphs(config))
        missing = sorted(needed - set(runners))
        if missing:
            raise ValueError(f"a {self.name} backend needs the graphs {sorted(needed)}; missing {missing}")
        self.runners = runners
        self.num_layers = len(layer_shapes(config))
        self._mel = MelFrontend(config.audio).to(self.device) if config.audio.kind == "mel" else None

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        return run_rows(self.runners["vae_encoder"], {"images": self._in(images)})["latents"]

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        return run_rows(self.runners["vae_decoder"], {"latents": self._in(latents)})["images"]

    @torch.no_grad()
    def audio_features(self, wave: Tensor) -> Tensor:
        """wave (B, S) -> (B, T, 2w+1, L, D); mel in torch, wav2vec2 through its graph."""
        wave = self._in(wave)
        feats = self._mel(wave) if self._mel is not None else self._wav2vec2(wave)  # (B, T, L, D)
        return window_features(feats, self.config.audio.window)

    def _wav2vec2(self, wave: Tensor) -> Tensor:
        # Same steps as fada_rt.models.audio.Wav2Vec2Frontend around the exported Wav2Vec2Model.
        c = self.config.audio
        t = num_video_frames(wave.shape[1], c)
        x = wave
        if c.normalize_waveform:
            x = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(x.var(dim=1, keepdim=True) + 1e-7)
        min_len = self.runners["wav2vec2"].spec.dynamic[0].min
        if x.shape[1] < min_len:
            x = F.pad(x, (0, min_len - x.shape[1]))
        feats = run_rows(self.runners["wav2vec2"], {"waveform": x})["hidden_states"]  # (B, T50, L, D)
        b, t50, layers, d = feats.shape
        flat = feats.permute(0, 2, 3, 1).reshape(b, layers * d, t50)
        resampled = F.interpolate(flat, size=t, mode="linear", align_corners=False)  # (B, L*D, T)
        return resampled.view(b, layers, d, t).permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def audio_tokens(self, windows: Tensor) -> Tensor:
        """windows (B, T, 2w+1, L, D) -> tokens (B, T, N, D_audio)."""
        b, t = windows.shape[:2]
        tokens = run_rows(self.runners["audio_proj"], {"windows": self._in(windows).flatten(0, 1)})["tokens"]
        return tokens.view(b, t, *tokens.shape[1:])

    @torch.no_grad()
    def reference(self, ref_latent: Tensor) -> ReferenceCache:
        """ref_latent (B, C, h, w) -> per-layer K/V (B, HW_l, C_l), once per avatar."""
        out = run_rows(self.runners["reference_encoder"], {"latents": self._in(ref_latent)})
        n = self.num_layers
        return ReferenceCache([out[f"ref_k_{i}"] for i in range(n)], [out[f"ref_v_{i}"] for i in range(n)])

    @torch.no_grad()
    def motion_features(self, motion_latents: Tensor) -> list[Tensor]:
        """motion_latents (B, M, C, h, w) -> per layer (B, M, HW_l, C_l), once per chunk."""
        b, m = motion_latents.shape[:2]
        out = run_rows(self.runners["reference_encoder"], {"latents": self._in(motion_latents).flatten(0, 1)})
        return [out[f"features_{i}"].view(b, m, *out[f"features_{i}"].shape[1:]) for i in range(self.num_layers)]

    def bind(self, conditions: ChunkConditions) -> BranchedDenoiser:
        denoiser = GraphDenoiser(self.runners["denoiser"], cfg_conditioned=self.cfg_conditioned)
        return _NoGradBranchedDenoiser(denoiser, conditions)  # type: ignore[arg-type]

    def _in(self, x: Tensor) -> Tensor:
        return x.to(self.device, torch.float32)


class _NoGradBranchedDenoiser(BranchedDenoiser):
    @torch.no_grad()
    def __call__(self, z, timestep, *, branches, cfg=None):
        return super().__call__(z, timestep, branches=branches, cfg=cfg)
