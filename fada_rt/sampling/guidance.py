"""Multi-CFG (paper Eq. 9, docs/design.md §3.1) and the single place that calls a denoiser.

``eps_cfg = eps_b + cfg_r (eps_r - eps_b) + cfg_a (eps_a - eps_r)``

Three guidance modes:

* ``"multi"``: the three branches a, r, b in ONE batched forward, combined by Eq. 9
  (teacher, balanced student): 3 NFE per step.
* ``"distilled"``: a CFG-distilled student (``cfg_conditioned``) gets (cfg_a, cfg_r) as an
  input and returns the guided eps directly (paper §3.3, Eq. 10): 1 NFE per step.
* ``"conditional"``: branch "a" only, no guidance (Table 4's "no CFG distillation"): 1 NFE.

Scales are Python floats or per-sample (B,) tensors (distillation draws them per sample).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from fada_rt.sampling.denoiser import Denoiser
from fada_rt.sampling.schedule import per_sample

GuidanceMode = Literal["multi", "distilled", "conditional"]
_MODES = ("multi", "distilled", "conditional")

#: Paper §4.1: teacher and balanced student.
TEACHER_CFG_A = 6.5
TEACHER_CFG_R = 2.5
#: Paper §4.1: CFG-distilled ("fast") student.
DISTILLED_CFG_A = 6.5
DISTILLED_CFG_R = 2.0


@dataclass(frozen=True, eq=False)
class Guidance:
    """How to turn denoiser branches into one eps: mode plus (cfg_a, cfg_r).

    ``cfg_a``/``cfg_r`` are floats or (B,) tensors; in ``"conditional"`` mode they are unused.
    """

    mode: GuidanceMode
    cfg_a: float | Tensor = TEACHER_CFG_A
    cfg_r: float | Tensor = TEACHER_CFG_R

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"Guidance.mode must be one of {_MODES}, got {self.mode!r}")
        for name in ("cfg_a", "cfg_r"):
            value = getattr(self, name)
            if isinstance(value, Tensor):
                if value.dim() > 1:
                    raise ValueError(
                        f"Guidance.{name} must be a float or a (B,) tensor, got {tuple(value.shape)}"
                    )
            elif not isinstance(value, (int, float)):
                raise ValueError(
                    f"Guidance.{name} must be a float or a (B,) tensor, got {type(value).__name__}"
                )

    @property
    def branches(self) -> tuple[str, ...]:
        """The denoiser branches this mode evaluates, in call order."""
        return ("a", "r", "b") if self.mode == "multi" else ("a",)

    @property
    def nfe_per_step(self) -> int:
        """Denoiser evaluations per sample per step (each CFG branch counts)."""
        return len(self.branches)


#: Teacher DDIM and the balanced student (3 branches, paper §4.1 scales).
TEACHER_GUIDANCE = Guidance("multi", cfg_a=TEACHER_CFG_A, cfg_r=TEACHER_CFG_R)
BALANCED_GUIDANCE = TEACHER_GUIDANCE
#: The CFG-distilled fast student (1 branch, scales as network input).
FAST_GUIDANCE = Guidance("distilled", cfg_a=DISTILLED_CFG_A, cfg_r=DISTILLED_CFG_R)


def multi_cfg(
    eps_a: Tensor, eps_r: Tensor, eps_b: Tensor, *, cfg_a: float | Tensor, cfg_r: float | Tensor
) -> Tensor:
    """Eq. 9, ``eps_b + cfg_r (eps_r - eps_b) + cfg_a (eps_a - eps_r)``; per-sample scales broadcast.

    Evaluated in the algebraically equal form ``cfg_a eps_a + ((cfg_r - cfg_a) eps_r +
    (1 - cfg_r) eps_b)`` so that ``cfg_a = cfg_r = 1`` returns ``eps_a`` bit for bit.
    """
    a = per_sample(cfg_a, eps_a)
    r = per_sample(cfg_r, eps_a)
    return a * eps_a + ((r - a) * eps_r + (1 - r) * eps_b)


def guided_eps(*, denoiser: Denoiser, z: Tensor, timestep: Tensor, guidance: Guidance) -> tuple[Tensor, int]:
    """Call ``denoiser`` once with the branches ``guidance`` needs; return (guided eps, NFE spent).

    z: (B, *S); timestep: (B,) network timestep, or (B, F) one per frame. The NFE is per sample: 3 for "multi", 1 otherwise.
    """
    if guidance.mode == "distilled" and not denoiser.cfg_conditioned:
        raise ValueError(
            "Guidance mode 'distilled' needs a CFG-distilled denoiser (cfg_conditioned=True); "
            "use Guidance('multi', ...) for a teacher or balanced student"
        )
    if guidance.mode != "distilled" and denoiser.cfg_conditioned:
        raise ValueError(
            f"a CFG-distilled denoiser (cfg_conditioned=True) takes the scales as input; use "
            f"Guidance('distilled', cfg_a=..., cfg_r=...) instead of mode {guidance.mode!r}"
        )
    batch = z.shape[0]
    if tuple(timestep.shape) not in ((batch,), tuple(z.shape[:2])):
        raise ValueError(
            f"timestep must have shape ({batch},) for a batch of {batch}, or {tuple(z.shape[:2])} with one per frame, "
            f"got {tuple(timestep.shape)}"
        )
    cfg = _cfg_input(guidance, z) if guidance.mode == "distilled" else None
    branches = guidance.branches
    eps = denoiser(z, timestep, branches=branches, cfg=cfg)  # (n_branches, B, *S)
    expected = (len(branches), *z.shape)
    if tuple(eps.shape) != expected:
        raise ValueError(
            f"denoiser returned shape {tuple(eps.shape)} for branches {branches}; expected {expected} "
            "(len(branches), B, *S)"
        )
    if guidance.mode == "multi":
        out = multi_cfg(eps[0], eps[1], eps[2], cfg_a=guidance.cfg_a, cfg_r=guidance.cfg_r)
    else:
        out = eps[0]
    return out, len(branches)


def _cfg_input(guidance: Guidance, z: Tensor) -> Tensor:
    """(B, 2) [cfg_a, cfg_r] in z's dtype/device for a CFG-conditioned denoiser."""
    batch = z.shape[0]
    cols = []
    for name in ("cfg_a", "cfg_r"):
        value = getattr(guidance, name)
        col = torch.as_tensor(value, dtype=z.dtype, device=z.device)
        if col.dim() == 1 and col.shape[0] != batch:
            raise ValueError(f"Guidance.{name} has {col.shape[0]} entries for a batch of {batch}")
        cols.append(col.expand(batch))
    return torch.stack(cols, dim=1)  # (B, 2)
