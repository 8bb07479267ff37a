"""The rolling (pipelined, diagonal) student sampler: frames in flight at their own noise levels (docs/design.md §8).

The chunk sampler (:func:`fada_rt.sampling.student_sample`) takes a whole chunk from t = 1 to t = 0 before its
first frame comes out, so that frame waits for the chunk's audio and all of its steps. The rolling sampler keeps
the frames in flight, oldest first, each at its own stage of a :class:`StudentPlan` (stage ``s``: ``s`` steps
taken, so network timestep ``plan.steps[s].timestep``). One call runs the denoiser ONCE on all of them with a
timestep per frame and moves every frame one step (its own PeRFlow update, :func:`student_step`); the frames that
took the plan's last step are clean and leave; new frames join at stage 0 (t = 1) whenever their audio is
ready. Noise levels across the window therefore always fall from the newest frame to the oldest — the
per-frame, monotone levels the streaming student is trained on (:func:`fada_rt.sampling.draw_frame_times`).

Each frame still gets exactly ``plan.num_steps`` denoiser evaluations (x branches), as in a chunk, but a frame
comes out ``plan.num_steps`` calls after its audio is ready instead of after a whole chunk. PersonaLive
(Li et al. 2025) runs an SD1.5 portrait animator this way; StreamDiffusion's "stream batch" is the same idea
for images.

For a denoiser that treats frames independently (tests/analytic.py) the rolling sampler equals the chunk sampler
frame by frame; a real denoiser's temporal attention sees neighbours at other noise levels, which the streaming
student is distilled for.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from fada_rt.sampling.denoiser import Denoiser, SampleResult
from fada_rt.sampling.guidance import Guidance, guided_eps
from fada_rt.sampling.student import StudentPlan


@dataclass(frozen=True, eq=False)
class RollingCoefficients:
    """A plan's per-step update as tensors, indexed by stage: ``z_end = lam z + eta eps``, ``z += frac (z_end - z)``."""

    timestep: Tensor  # (S,) float32 network timestep per stage
    lam: Tensor  # (S,) float64
    eta: Tensor  # (S,) float64
    frac: Tensor  # (S,) float64

    @classmethod
    @functools.cache
    def of(cls, plan: StudentPlan) -> RollingCoefficients:
        """Once per plan (plans are frozen), not once per call."""
        steps = plan.steps
        return cls(timestep=torch.tensor([s.timestep for s in steps], dtype=torch.float32),
                   lam=torch.tensor([s.lam_t for s in steps], dtype=torch.float64),
                   eta=torch.tensor([s.eta_t for s in steps], dtype=torch.float64),
                   frac=torch.tensor([s.frac for s in steps], dtype=torch.float64))


def check_stages(stage: Tensor, num_stages: int) -> None:
    """Stages must be int64 in [0, S), non-increasing from the newest frame back: oldest first, so ascending
    noise means descending stage."""
    if stage.dim() != 1 or stage.dtype != torch.int64:
        raise ValueError(f"stage must be a (F,) int64 tensor of steps taken, got {tuple(stage.shape)} {stage.dtype}")
    if stage.numel() == 0:
        raise ValueError("no frames in flight: admit frames before a rolling step")
    if bool(((stage < 0) | (stage >= num_stages)).any()):
        raise ValueError(f"stages must lie in [0, {num_stages}) for a {num_stages}-step plan, got {stage.tolist()}")
    if bool((stage[1:] > stage[:-1]).any()):
        raise ValueError(f"frames in flight must be oldest first (stages non-increasing), got {stage.tolist()}")


@torch.no_grad()
def rolling_step(*, denoiser: Denoiser, z: Tensor, stage: Tensor, guidance: Guidance,
                 plan: StudentPlan) -> tuple[Tensor, int]:
    """One call: every frame in flight ``z`` (B, F, *S), at its ``stage`` (F,), takes its own next step.

    Returns the latents after the step (the frames now at stage ``S`` are clean) and the NFE per frame (1, or
    3 for multi-CFG).
    """
    check_stages(stage, plan.num_steps)
    co = RollingCoefficients.of(plan)
    b, f = z.shape[:2]
    s = stage.cpu()
    ts = co.timestep[s].to(z.device)[None].expand(b, f)  # (B, F) network timestep per frame
    eps, nfe = guided_eps(denoiser=denoiser, z=z, timestep=ts, guidance=guidance)  # (B, F, *S)
    shape = (1, f) + (1,) * (z.dim() - 2)

    def per_frame(x: Tensor) -> Tensor:
        return x[s].to(device=z.device, dtype=z.dtype).reshape(shape)

    z_end = per_frame(co.lam) * z + per_frame(co.eta) * eps
    return z + per_frame(co.frac) * (z_end - z), nfe


@torch.no_grad()
def rolling_sample(*, denoiser: Denoiser, noise: Tensor, guidance: Guidance, plan: StudentPlan,
                   group: int = 1) -> SampleResult:
    """Run a whole sequence ``noise`` (B, T, *S) at t = 1 through the rolling schedule, ``group`` frames joining per
    call, for a denoiser that needs no per-call conditions; returns the clean latents (B, T, *S) and the NFE per
    frame. (The avatar runtime does the same per call with each window's conditions: ``AvatarPipeline.advance``.)"""
    if group < 1:
        raise ValueError(f"group must be >= 1 frame per call, got {group}")
    total = noise.shape[1]
    flight = noise[:, :0]
    stage = torch.zeros(0, dtype=torch.int64)
    out, admitted, nfe = [], 0, 0
    while admitted < total or flight.shape[1]:
        new = noise[:, admitted : admitted + group]
        admitted += new.shape[1]
        flight = torch.cat([flight, new], dim=1)
        stage = torch.cat([stage, torch.zeros(new.shape[1], dtype=torch.int64)])
        flight, nfe = rolling_step(denoiser=denoiser, z=flight, stage=stage, guidance=guidance, plan=plan)
        stage = stage + 1
        done = int((stage == plan.num_steps).sum())
        out.append(flight[:, :done])
        flight, stage = flight[:, done:], stage[done:]
    return SampleResult(z0=torch.cat(out, dim=1), nfe=nfe * plan.num_steps)
