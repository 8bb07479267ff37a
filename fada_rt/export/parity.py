"""Parity of exported graphs against torch fp32: tolerances, comparisons, the 6-step chunk (docs/design.md §5).

Error measure, per output: ``max |exported - torch| / max |torch|`` — the largest absolute error
relative to the output's scale, so one number works for eps (~1), latents and K/V alike.

Tolerances (fp32 = onnxruntime CPU running the fp32 graph; fp16 = the fp16 graph with its fp32
islands; both against torch fp32 on the same inputs):

=====================  ==========  ===========================================================
constant               value       what
=====================  ==========  ===========================================================
GRAPH_TOLERANCE fp32   1e-4        every output of every graph (measured ~1e-6 on ``tiny``)
GRAPH_TOLERANCE fp16   2e-2        every output of every graph (measured ~1e-3 on ``tiny``)
CHUNK_TOLERANCE fp32   1e-3        end latents and decoded frames of a whole chunk
CHUNK_TOLERANCE fp16   5e-2        the same, fp16 error compounding over the 6 steps
=====================  ==========  ===========================================================

The chunk runs both backends through the same Backend calls from the same inputs and noise:
reference K/V, motion features, audio tokens, the sampler, the VAE decode. A student runs the
6-step PeRFlow sampler (fast: 6 NFE with the distilled scales; balanced: multi-CFG, 18 NFE); a
teacher runs 6 trailing DDIM steps with multi-CFG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fada_rt.backends.base import Backend
from fada_rt.sampling import (
    BALANCED_GUIDANCE,
    FAST_GUIDANCE,
    TEACHER_GUIDANCE,
    DDIMPlan,
    StudentPlan,
    ddim_sample,
    student_sample,
)

GRAPH_TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}
CHUNK_TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2}
CHUNK_STEPS = 6


class ParityError(RuntimeError):
    """Exported graphs that do not match torch; the message lists every failing output and by how much."""


@dataclass(frozen=True)
class ParityResult:
    name: str  # "graph/output"
    max_abs: float
    scale: float
    tolerance: float

    @property
    def rel(self) -> float:
        return self.max_abs / self.scale if self.scale > 0 else (0.0 if self.max_abs == 0 else math.inf)

    @property
    def ok(self) -> bool:
        return self.rel <= self.tolerance

    def describe(self) -> str:
        if self.ok:
            verdict = "ok"
        else:
            verdict = f"FAILS: {self.rel / self.tolerance:.1f}x the tolerance" if self.tolerance > 0 else "FAILS"
        return (f"{self.name}: max |err| {self.max_abs:.3g} = {self.rel:.3g} of the output scale {self.scale:.3g} "
                f"(tolerance {self.tolerance:g}) {verdict}")

    def to_dict(self) -> dict[str, Any]:
        return {"max_abs": self.max_abs, "rel": self.rel, "scale": self.scale, "tolerance": self.tolerance}


def compare(name: str, actual: Tensor, expected: Tensor, *, tolerance: float) -> ParityResult:
    """Max abs error of ``actual`` relative to ``expected``'s scale; shapes must agree; NaN/inf fail."""
    if tuple(actual.shape) != tuple(expected.shape):
        raise ParityError(f"{name}: exported output has shape {tuple(actual.shape)}, torch {tuple(expected.shape)}")
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    err = (a - e).abs().max().item() if a.numel() else 0.0
    if not math.isfinite(err):
        err = math.inf
    return ParityResult(name, err, e.abs().max().item() if e.numel() else 0.0, tolerance)


def check(results: list[ParityResult], *, what: str) -> None:
    """Raise ParityError naming every failing result (and how far off it is)."""
    failed = [r for r in results if not r.ok]
    if failed:
        lines = "\n".join(f"  {r.describe()}" for r in failed)
        raise ParityError(f"{what}: {len(failed)} of {len(results)} outputs exceed their tolerance:\n{lines}")


@dataclass(frozen=True)
class ChunkInputs:
    """One chunk's inputs: reference latent, motion latents, audio and the starting noise."""

    ref_latent: Tensor  # (1, C, h, w)
    motion_latents: Tensor  # (1, M, C, h, w)
    wave: Tensor  # (1, F * samples_per_frame)
    noise: Tensor  # (1, F, C, h, w)

    @classmethod
    def random(cls, config: Any, *, seed: int) -> ChunkInputs:
        gen = torch.Generator().manual_seed(seed)
        c, h, f, m = config.vae.latent_channels, config.latent_size, config.num_frames, config.motion_frames
        return cls(
            ref_latent=torch.randn(1, c, h, h, generator=gen),
            motion_latents=torch.randn(1, m, c, h, h, generator=gen),
            wave=torch.randn(1, f * config.audio.samples_per_frame, generator=gen) * 0.1,
            noise=torch.randn(1, f, c, h, h, generator=gen),
        )


@torch.no_grad()
def run_chunk(backend: Backend, inputs: ChunkInputs, *, role: str) -> tuple[Tensor, Tensor]:
    """End latents (1, F, C, h, w) and decoded frames (F, 3, H, W) of one chunk on ``backend``."""
    dev = backend.device
    reference = backend.reference(inputs.ref_latent.to(dev))
    conditions = backend.conditions(reference, inputs.motion_latents.to(dev), backend.audio_features(inputs.wave.to(dev)))
    denoiser = backend.bind(conditions)
    noise = inputs.noise.to(dev)
    if backend.cfg_conditioned:
        result = student_sample(denoiser=denoiser, noise=noise, guidance=FAST_GUIDANCE,
                                plan=StudentPlan.make(num_steps=CHUNK_STEPS))
    elif role == "student":
        result = student_sample(denoiser=denoiser, noise=noise, guidance=BALANCED_GUIDANCE,
                                plan=StudentPlan.make(num_steps=CHUNK_STEPS))
    else:
        result = ddim_sample(denoiser=denoiser, noise=noise, guidance=TEACHER_GUIDANCE,
                             plan=DDIMPlan.trailing(num_steps=CHUNK_STEPS))
    latents = result.z0
    return latents, backend.decode(latents[0])


def chunk_parity(exported: Backend, reference: Backend, *, role: str, precision: str, seed: int,
                 label: str = "chunk") -> list[ParityResult]:
    """Run one whole chunk on both backends from the same inputs; compare latents and frames."""
    inputs = ChunkInputs.random(exported.config, seed=seed)
    lat_e, img_e = run_chunk(exported, inputs, role=role)
    lat_r, img_r = run_chunk(reference, inputs, role=role)
    tol = CHUNK_TOLERANCE[precision]
    return [compare(f"{label}/latents", lat_e, lat_r, tolerance=tol),
            compare(f"{label}/frames", img_e, img_r, tolerance=tol)]
