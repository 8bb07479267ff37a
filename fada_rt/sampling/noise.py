"""Noise for chaining chunks: the mixed noise prior and motion-frame noise (docs/design.md §8).

Both are used the same way by the runtime (:class:`fada_rt.pipeline.AvatarPipeline`, at the levels a
checkpoint's :class:`fada_rt.config.RolloutConfig` names) and by training (drawn per sample), so a model
is trained on exactly what it is fed.

* :func:`share_noise` — PYoCo's mixed noise prior (Ge et al. 2023): ``eps_f = sqrt(rho) shared +
  sqrt(1 - rho) own_f``. Every frame's noise is still N(0, I); two frames' noises correlate by rho.
  Independent per-frame noise makes each frame's fine detail a draw of its own: flicker.
* :func:`noise_motion` — Hallo2's motion-frame noise: the motion latents forward-noised to a training
  index, ``sqrt(abar[s]) m + sqrt(1 - abar[s]) n`` (s = 0: clean), so detail the model itself got
  wrong in a previous chunk is drowned and must come from the reference instead.
"""

from __future__ import annotations

from torch import Tensor

from fada_rt.sampling.schedule import SD15_SCHEDULE, NoiseSchedule, per_sample


def share_noise(own: Tensor, shared: Tensor, sharing: Tensor | float) -> Tensor:
    """own (B, F, *S) and shared (B, 1, *S) standard normal, ``sharing`` rho scalar or (B,) in [0, 1]
    -> (B, F, *S) ``sqrt(rho) shared + sqrt(1 - rho) own``."""
    if shared.dim() != own.dim() or shared.shape[1] != 1 or shared.shape[2:] != own.shape[2:]:
        raise ValueError(f"shared noise must be (B, 1, *S) for own noise {tuple(own.shape)}, got {tuple(shared.shape)}")
    rho = per_sample(sharing, own)
    if isinstance(rho, float) and not 0.0 <= rho <= 1.0:
        raise ValueError(f"noise sharing must be in [0, 1], got {rho}")
    return rho**0.5 * shared + (1.0 - rho) ** 0.5 * own


def noise_motion(motion: Tensor, noise: Tensor, step: Tensor | int, *,
                 schedule: NoiseSchedule = SD15_SCHEDULE) -> Tensor:
    """Motion latents (B, M, *S) forward-noised to training index ``step`` (int or (B,) int64; 0 = clean)."""
    step_t = step if isinstance(step, Tensor) else None
    if step_t is None:
        if not 0 <= step < schedule.num_train_timesteps:
            raise ValueError(f"motion noise step must be in [0, {schedule.num_train_timesteps - 1}], got {step}")
        if step == 0:
            return motion
        abar = float(schedule.alphas_cumprod[step])
        return abar**0.5 * motion + (1.0 - abar) ** 0.5 * noise
    abar = schedule.alphas_cumprod.to(step.device)[step.long()]  # (B,) float64
    abar = abar.masked_fill(step == 0, 1.0)  # step 0: clean
    a = per_sample(abar, motion)
    return a.sqrt() * motion + (1.0 - a).sqrt() * noise
