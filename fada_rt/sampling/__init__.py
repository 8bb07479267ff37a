"""Sampling and distillation math as plain functions over one denoiser callable (docs/design.md §3).

* ``schedule``: SD1.5 noise schedule, continuous-time mapping, DDIM step.
* ``guidance``: multi-CFG (Eq. 9) and the one function that calls a denoiser (+ NFE).
* ``ddim``: the teacher sampler (trailing spacing, 25 steps x 3 = 75 NFE).
* ``perflow``: windows, student input (fixed Eq. 3), targets (Eq. 4).
* ``window_solve``: the teacher window solve (Eq. 2) and a distillation batch.
* ``student``: the student scheduler and sampler (6 steps: 18 or 6 NFE).
* ``rolling``: the same student steps with frames in flight at their own noise levels (the stream sampler).
* ``weighting``: the adaptive ground-truth weight W(R) (Eq. 8).
* ``samplers``: the named samplers (fast, balanced, teacher, ...): a plan and a guidance each.
* ``noise``: the mixed noise prior and motion-frame noise for chaining chunks.

(The exact denoiser for Gaussian data that the sampler tests check against lives in tests/analytic.py.)
"""

from fada_rt.sampling.ddim import DDIMPlan, ddim_sample
from fada_rt.sampling.denoiser import BRANCHES, Denoiser, SampleResult
from fada_rt.sampling.guidance import (
    BALANCED_GUIDANCE,
    DISTILLED_CFG_A,
    DISTILLED_CFG_R,
    FAST_GUIDANCE,
    TEACHER_CFG_A,
    TEACHER_CFG_R,
    TEACHER_GUIDANCE,
    Guidance,
    guided_eps,
    multi_cfg,
)
from fada_rt.sampling.noise import noise_motion, share_noise
from fada_rt.sampling.perflow import (
    PerflowWindows,
    draw_frame_times,
    draw_training_times,
    ground_truth_end,
    perflow_target,
    student_input,
    window_start_latent,
)
from fada_rt.sampling.rolling import rolling_sample, rolling_step
from fada_rt.sampling.samplers import SAMPLERS, SamplerSpec
from fada_rt.sampling.schedule import SD15_SCHEDULE, NoiseSchedule, ddim_coefficients, ddim_step
from fada_rt.sampling.student import StudentPlan, StudentStep, student_sample, student_step
from fada_rt.sampling.weighting import (
    RATIO_EPS,
    GTWeightConfig,
    MixedLoss,
    gt_weight,
    loss_ratio,
    mixed_supervision_loss,
)
from fada_rt.sampling.window_solve import (
    DistillationBatch,
    WindowSolvePlan,
    WindowSolveResult,
    exact_substep_counts,
    make_distillation_batch,
    teacher_window_solve,
)

__all__ = [
    "BALANCED_GUIDANCE",
    "BRANCHES",
    "DISTILLED_CFG_A",
    "DISTILLED_CFG_R",
    "FAST_GUIDANCE",
    "RATIO_EPS",
    "SAMPLERS",
    "SD15_SCHEDULE",
    "TEACHER_CFG_A",
    "TEACHER_CFG_R",
    "TEACHER_GUIDANCE",
    "DDIMPlan",
    "Denoiser",
    "DistillationBatch",
    "GTWeightConfig",
    "Guidance",
    "MixedLoss",
    "NoiseSchedule",
    "PerflowWindows",
    "SampleResult",
    "SamplerSpec",
    "StudentPlan",
    "StudentStep",
    "WindowSolvePlan",
    "WindowSolveResult",
    "ddim_coefficients",
    "ddim_sample",
    "ddim_step",
    "draw_frame_times",
    "draw_training_times",
    "exact_substep_counts",
    "ground_truth_end",
    "gt_weight",
    "guided_eps",
    "loss_ratio",
    "make_distillation_batch",
    "mixed_supervision_loss",
    "multi_cfg",
    "noise_motion",
    "perflow_target",
    "rolling_sample",
    "rolling_step",
    "share_noise",
    "student_input",
    "student_sample",
    "student_step",
    "teacher_window_solve",
    "window_start_latent",
]
