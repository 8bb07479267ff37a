"""The teacher side of a distillation step (paper §3.1–3.3): the step's draws (noise, training times and windows,
CFG scales, condition dropout) and the teacher's window solve that makes the student's targets
(:func:`distillation_batch`, over the library's :func:`fada_rt.sampling.make_distillation_batch`).
``train.distill`` is the loop around them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from fada_rt.models.fada import BranchedDenoiser, ChunkConditions, FadaModel
from fada_rt.sampling import (
    Denoiser,
    DistillationBatch,
    Guidance,
    PerflowWindows,
    WindowSolvePlan,
    draw_frame_times,
    draw_training_times,
    make_distillation_batch,
    teacher_window_solve,
    window_start_latent,
)
from train.data import ChunkBatch, draw_shared_noise
from train.loop import step_seed

if TYPE_CHECKING:
    from train.distill import DistillConfig


class SampleBranchDenoiser:
    """A teacher denoiser in which every sample has its own CFG branch (condition dropout), for the
    window solve of students without CFG conditioning; called with branch "a" (Guidance conditional)."""

    cfg_conditioned = False

    def __init__(self, model: FadaModel, conditions: ChunkConditions, keep_audio: Tensor, keep_ref: Tensor) -> None:
        self.model, self.c = model, conditions
        self.tokens = conditions.audio_tokens * keep_audio.view(-1, 1, 1, 1).to(conditions.audio_tokens.dtype)
        self.keep_ref = keep_ref

    def __call__(self, z: Tensor, timestep: Tensor, *, branches, cfg: Tensor | None = None) -> Tensor:
        if tuple(branches) != ("a",) or cfg is not None:
            raise ValueError("per-sample branches are solved conditionally: branches=('a',), no cfg")
        c = self.c
        eps = self.model.denoiser(z, timestep, self.tokens, c.reference.keys, c.reference.values, c.motion,
                                  ref_mask=self.keep_ref)
        return eps[None]


@dataclass
class StepDraws:
    eps: Tensor  # (B, F, C, h, w)
    t: Tensor  # (B,) training time, or (B, F) per frame (streaming student)
    window: Tensor  # (B,) or (B, F) int64
    cfg: Tensor  # (B, 2) [cfg_a, cfg_r]
    keep_audio: Tensor  # (B,) bool
    keep_ref: Tensor  # (B,) bool


def window_frames(config: DistillConfig, num_frames: int, *, step: int, rank: int) -> int:
    """Frames of a step's window: the whole chunk, or for the streaming student 1..stream_frames (at most the
    chunk), drawn per step as the rolling sampler's frames in flight vary."""
    if not config.stream_frames:
        return num_frames
    gen = torch.Generator().manual_seed(step_seed(config.seed, step, rank, stream=3))
    return int(torch.randint(1, min(config.stream_frames, num_frames) + 1, (), generator=gen))


def draw_step(batch: ChunkBatch, config: DistillConfig, windows: PerflowWindows, *, step: int, rank: int) -> StepDraws:
    gen = torch.Generator().manual_seed(step_seed(config.seed, step, rank, stream=2))
    b = batch.x0.shape[0]
    eps = torch.randn(batch.x0.shape, generator=gen)
    if config.stream_frames:
        t, window = draw_frame_times(b, batch.x0.shape[1], windows=windows, generator=gen, p_pipeline=config.p_pipeline)
    else:
        t, window = draw_training_times(batch_size=b, windows=windows, generator=gen)
    lo = torch.tensor([config.cfg_a_range[0], config.cfg_r_range[0]])
    hi = torch.tensor([config.cfg_a_range[1], config.cfg_r_range[1]])
    cfg = lo + (hi - lo) * torch.rand(b, 2, generator=gen)
    u = torch.rand(b, generator=gen)
    if config.cfg_conditioned:
        keep_ref = keep_audio = torch.ones(b, dtype=torch.bool)
    else:
        keep_ref = u >= config.p_drop_both
        keep_audio = u >= config.p_drop_both + config.p_drop_audio
    return StepDraws(draw_shared_noise(eps, config.noise_sharing_max, gen), t, window, cfg, keep_audio, keep_ref)


def teacher_denoiser(teacher: FadaModel, batch: ChunkBatch, d: StepDraws,
                     config: DistillConfig) -> tuple[Denoiser, Guidance]:
    """The teacher as the window solve (Eq. 2) calls it, and its guidance: CFG-conditioned students get the
    multi-CFG prediction at each sample's scales; the others each sample's own dropout branch, conditionally."""
    conditions = teacher.conditions(batch.reference, batch.motion, batch.audio)
    if config.cfg_conditioned:
        return (BranchedDenoiser(teacher.denoiser, conditions),
                Guidance(mode="multi", cfg_a=d.cfg[:, 0], cfg_r=d.cfg[:, 1]))
    return SampleBranchDenoiser(teacher, conditions, d.keep_audio, d.keep_ref), Guidance(mode="conditional")


@torch.no_grad()
def frame_window_ends(teacher: FadaModel, batch: ChunkBatch, d: StepDraws, plan: WindowSolvePlan,
                      config: DistillConfig) -> Tensor:
    """The teacher's window end of every frame at its own window, (B, F, *S), for per-frame windows (B, F).

    The teacher was trained on clips at one noise level, so each sample's clip is solved once per window its
    frames are in (Eq. 2, all frames at that window, one batch of every such pair) and each frame takes its
    end from the solve at its own window.
    """
    b, f = d.window.shape
    k_all = plan.windows.num_windows
    rows = torch.arange(b, device=d.window.device)
    present = torch.zeros(b, k_all + 1, dtype=torch.bool, device=d.window.device)
    present[rows[:, None], d.window] = True
    sample, window = present.nonzero(as_tuple=True)  # (P,) pairs (sample, window)
    sub = batch.select(sample)
    sub_draws = StepDraws(d.eps[sample], d.t[sample, 0], window, d.cfg[sample], d.keep_audio[sample],
                          d.keep_ref[sample])
    denoiser, guidance = teacher_denoiser(teacher, sub, sub_draws, config)
    z_start = window_start_latent(x0=sub.x0, eps=sub_draws.eps, window=window, windows=plan.windows)
    ends = teacher_window_solve(denoiser=denoiser, z_start=z_start, window=window, guidance=guidance,
                                plan=plan).z_end  # (P, F, *S)
    pair = torch.full((b, k_all + 1), -1, dtype=torch.int64, device=d.window.device)
    pair[sample, window] = torch.arange(sample.shape[0], device=d.window.device)
    return ends[pair[rows[:, None], d.window], torch.arange(f, device=d.window.device)[None]]  # (B, F, *S)


@torch.no_grad()
def distillation_batch(teacher: FadaModel, batch: ChunkBatch, d: StepDraws, plan: WindowSolvePlan,
                       config: DistillConfig, *, z_end: Tensor | None = None) -> DistillationBatch:
    """One step's student inputs and targets: :func:`fada_rt.sampling.make_distillation_batch` with this
    run's teacher (:func:`teacher_denoiser`; per-frame windows: :func:`frame_window_ends`); ``z_end``: the
    teacher's window end from a solve cache (the teacher is not called)."""
    if z_end is None and d.window.dim() == 2:
        z_end = frame_window_ends(teacher, batch, d, plan, config)
    denoiser, guidance = (None, None) if z_end is not None else teacher_denoiser(teacher, batch, d, config)
    return make_distillation_batch(teacher=denoiser, x0=batch.x0, eps=d.eps, t=d.t, window=d.window,
                                   guidance=guidance, plan=plan, z_end=z_end, ground_truth=config.uses_gt)
