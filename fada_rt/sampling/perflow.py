"""PeRFlow windows, the student input and the targets (paper §3.1–3.2, docs/design.md §3.3, §3.5).

``K`` windows, ``t_k = k / K``; window ``k`` (k = 1..K) is ``(t_{k-1}, t_k]``: it contains its
start ``t_k`` (the noisier end). Window tensors hold ``k`` as int64, per sample, so a batch
can mix windows.

Two target parameterisations (both after PeRFlow; the student sampler uses the same one):

* ``"ddim_eps"`` (Eq. 4, the default): ``epshat = (z_end - lam_k z_start) / eta_k`` with
  ``lam_k = sqrt(abar(t_{k-1}) / abar(t_k))`` and
  ``eta_k = sqrt(1 - abar(t_{k-1})) - sqrt(abar(t_{k-1}) (1 - abar(t_k)) / abar(t_k))``
  (**negative; the sign is kept**). The ground-truth target works out to ``eps`` itself.
* ``"diff_eps"``: same ``lam_k``, ``eta_k = -sqrt(abar(t_{k-1}) / abar(t_k) - 1)``: the noise
  of a one-step forward diffusion from the window end to its start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from fada_rt.sampling.schedule import SD15_SCHEDULE, NoiseSchedule, ddim_coefficients, per_sample

TargetKind = Literal["ddim_eps", "diff_eps"]
_TARGETS = ("ddim_eps", "diff_eps")


@dataclass(frozen=True, eq=False)
class PerflowWindows:
    """K equal windows over ``schedule`` and their per-window coefficients (float64, row k-1 = window k)."""

    num_windows: int = 4
    target: TargetKind = "ddim_eps"
    schedule: NoiseSchedule = SD15_SCHEDULE
    abar_start: Tensor = field(init=False)  # (K,) abar(t_k)
    abar_end: Tensor = field(init=False)  # (K,) abar(t_{k-1})
    lam: Tensor = field(init=False)  # (K,)
    eta: Tensor = field(init=False)  # (K,)

    def __post_init__(self) -> None:
        k = self.num_windows
        d = self.schedule.num_train_timesteps
        if not isinstance(k, int) or not 1 <= k <= d:
            raise ValueError(f"num_windows must be an int in [1, {d}], got {k!r}")
        if self.target not in _TARGETS:
            raise ValueError(f"target must be one of {_TARGETS}, got {self.target!r}")
        bounds = torch.arange(k + 1, dtype=torch.float64) / k  # t_0 .. t_K
        abar = self.schedule.abar(bounds)
        a_start, a_end = abar[1:], abar[:-1]
        lam, eta = ddim_coefficients(a_start, a_end)
        if self.target == "diff_eps":
            eta = -(a_end / a_start - 1.0).sqrt()
        for name, value in (("abar_start", a_start), ("abar_end", a_end), ("lam", lam), ("eta", eta)):
            object.__setattr__(self, name, value)

    def window_of(self, t: Tensor) -> Tensor:
        """Window ``k`` (int64) containing each ``t`` (any shape): ``t_{k-1} < t <= t_k``.

        ``t`` is first snapped to the D = 1000 grid, so float error at a boundary cannot move
        it into the wrong window; t = 0 maps to window 1.
        """
        d = self.schedule.num_train_timesteps
        steps = torch.round(t.to(torch.float64) * d).long()
        return ((steps * self.num_windows + d - 1) // d).clamp(1, self.num_windows)

    def bounds(self, window: Tensor) -> tuple[Tensor, Tensor]:
        """(t_start, t_end) = (t_k, t_{k-1}) per sample, float64."""
        w = window.to(torch.float64)
        return w / self.num_windows, (w - 1.0) / self.num_windows

    def coefficients(self, window: Tensor) -> tuple[Tensor, Tensor]:
        """(lam_k, eta_k) per sample, float64 on ``window``'s device."""
        idx = window_rows(window, self.num_windows)
        return self.lam.to(window.device)[idx], self.eta.to(window.device)[idx]


def draw_training_times(
    batch_size: int,
    *,
    windows: PerflowWindows,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """Per-sample training time and window (docs/design.md §3.3 step 1).

    ``t = 1 - floor(u D) / D`` with ``u ~ U[0, 1)`` drawn from ``generator`` (so t is in
    {1/D, ..., 1}); returns ``t`` (B,) float32 and its window (B,) int64.
    """
    d = windows.schedule.num_train_timesteps
    u = torch.rand(batch_size, generator=generator, device=device, dtype=torch.float64)
    steps = d - (u * d).floor().long().clamp(max=d - 1)  # (B,) in [1, D]
    t = steps.to(torch.float32) / d
    window = (steps * windows.num_windows + d - 1) // d
    return t, window


def draw_frame_times(
    batch_size: int,
    num_frames: int,
    *,
    windows: PerflowWindows,
    generator: torch.Generator,
    p_pipeline: float = 0.5,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """Per-frame training times for the streaming student: (B, F) ``t`` and windows, ascending over the frames
    (frame 0, the oldest, is the cleanest), as the rolling sampler keeps its frames in flight.

    With probability ``p_pipeline`` a sample is a full pipeline: ``g = ceil(F / K)`` frames per window in
    consecutive windows, the newest in a window drawn from those that fit, all frames at the same place in their
    windows (PeRFlow's windows sliding by one per stage); otherwise the ``F`` times are drawn independently
    (as :func:`draw_training_times`) and sorted, so gaps and frames sharing a window occur too. Every ``t`` lies
    on the 1/D grid in its window.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    k_all, d = windows.num_windows, windows.schedule.num_train_timesteps
    if d % k_all:
        raise ValueError(f"per-frame windows need num_windows dividing {d}, got {k_all}")
    b, f, per = batch_size, num_frames, d // k_all
    u = torch.rand(b, f, generator=generator, device=device, dtype=torch.float64)
    steps = (d - (u * d).floor().long().clamp(max=d - 1)).sort(dim=1).values  # (B, F) in [1, D], ascending
    g = -(-f // k_all)  # frames per window of a full pipeline
    span = -(-f // g)  # windows it covers
    newest = span + (torch.rand(b, generator=generator, device=device, dtype=torch.float64) * (k_all - span + 1)).floor()
    older = torch.arange(f - 1, -1, -1, device=device) // g  # (F,) windows below the newest
    offset = (torch.rand(b, generator=generator, device=device, dtype=torch.float64) * per).floor()  # (B,)
    piped = ((newest[:, None] - older[None]) * per - offset[:, None]).long()  # (B, F)
    pick = torch.rand(b, generator=generator, device=device, dtype=torch.float64) < p_pipeline
    steps = torch.where(pick[:, None], piped, steps)
    window = (steps * k_all + d - 1) // d
    return steps.to(torch.float32) / d, window


def window_start_latent(*, x0: Tensor, eps: Tensor, window: Tensor, windows: PerflowWindows) -> Tensor:
    """``z_{t_k} = sqrt(abar(t_k)) x0 + sqrt(1 - abar(t_k)) eps`` per sample (step 2)."""
    a = per_sample(windows.abar_start.to(window.device)[window_rows(window, windows.num_windows)], x0)
    return a.sqrt() * x0 + (1.0 - a).sqrt() * eps


def ground_truth_end(*, x0: Tensor, eps: Tensor, window: Tensor, windows: PerflowWindows) -> Tensor:
    """``z*_{t_{k-1}} = sqrt(abar(t_{k-1})) x0 + sqrt(1 - abar(t_{k-1})) eps``, same eps (§3.5)."""
    a = per_sample(windows.abar_end.to(window.device)[window_rows(window, windows.num_windows)], x0)
    return a.sqrt() * x0 + (1.0 - a).sqrt() * eps


def student_input(
    *, z_start: Tensor, z_end: Tensor, t: Tensor, window: Tensor, windows: PerflowWindows
) -> Tensor:
    """Eq. 3 (**fixed**): ``z_t = z_{t_k} + (z_{t_k} - z_{t_{k-1}}) / (t_k - t_{k-1}) (t - t_k)``.

    The paper drops the leading ``z_{t_k}``. ``t`` and ``window`` are (B,); every ``t`` must lie
    in its window, up to half a 1/D grid step (a ValueError says which do not).
    """
    t_start, t_end = windows.bounds(window)
    t64 = t.to(device=window.device, dtype=torch.float64)
    tol = 0.5 / windows.schedule.num_train_timesteps
    outside = (t64 > t_start + tol) | (t64 < t_end + tol)
    if bool(outside.any()):
        bad = outside.nonzero().flatten().tolist()[:8]
        raise ValueError(
            f"t outside its window (t_end, t_start] for samples {bad}; draw (t, window) with "
            "draw_training_times or PerflowWindows.window_of"
        )
    frac = per_sample((t64 - t_start) / (t_start - t_end), z_start)  # in (-1, 0]
    return z_start + (z_start - z_end) * frac


def perflow_target(*, z_start: Tensor, z_end: Tensor, window: Tensor, windows: PerflowWindows) -> Tensor:
    """Eq. 4: ``epshat = (z_end - lam_k z_start) / eta_k``, constant along the window's segment."""
    lam, eta = windows.coefficients(window)
    return (z_end - per_sample(lam, z_start) * z_start) / per_sample(eta, z_start)


def window_rows(window: Tensor, num_windows: int) -> Tensor:
    """Row index k-1 (int64) into the per-window tables for window numbers k, validated to lie in 1..K."""
    if window.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"window must be an integer tensor of window numbers 1..K, got dtype {window.dtype}")
    if bool(((window < 1) | (window > num_windows)).any()):
        bad = window[(window < 1) | (window > num_windows)].tolist()[:8]
        raise ValueError(f"window numbers must lie in 1..{num_windows}, got {bad}")
    return window.long() - 1
