"""The named samplers: a plan and a guidance per name, and the kind of model each needs (docs/design.md §3).

A table of data over the plain sampler functions; the pipeline checks a spec against its backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from torch import Tensor

from fada_rt.sampling.ddim import DDIMPlan, ddim_sample
from fada_rt.sampling.denoiser import Denoiser, SampleResult
from fada_rt.sampling.guidance import BALANCED_GUIDANCE, FAST_GUIDANCE, TEACHER_GUIDANCE, Guidance
from fada_rt.sampling.student import StudentPlan, student_sample


@dataclass(frozen=True)
class SamplerSpec:
    """A named way of sampling one chunk (a plan and a guidance), and the model it needs."""

    name: str
    role: str  # checkpoint role it needs: "student" or "teacher"
    guidance: Guidance
    plan: DDIMPlan | StudentPlan = field(repr=False)
    #: frames in flight at their own noise levels (fada_rt.sampling.rolling), not whole chunks: the runtime advances
    #: it per denoiser call (AvatarPipeline.advance) with a student trained on per-frame levels
    rolling: bool = False
    #: frames of audio after a frame's own that the runtime waits for before the frame starts (None: the audio
    #: window's half width, every feature exact; see fada_rt.streaming.AudioFeatureStream)
    lookahead: int | None = None

    @property
    def cfg_conditioned(self) -> bool:
        """Needs a CFG-distilled student (fast)."""
        return self.guidance.mode == "distilled"

    @property
    def nfe(self) -> int:
        return self.plan.num_steps * self.guidance.nfe_per_step

    def with_scales(self, *, cfg_audio: float | None = None, cfg_ref: float | None = None) -> SamplerSpec:
        """The same sampler at other guidance scales (Eq. 9's cfg_a, cfg_r); None keeps a scale."""
        if cfg_audio is None and cfg_ref is None:
            return self
        if self.guidance.mode == "conditional":
            raise ValueError(f"sampler {self.name!r} runs no classifier-free guidance (one conditional branch); "
                             f"drop --cfg-audio/--cfg-ref or use a guided sampler")
        for flag, value in (("cfg_audio", cfg_audio), ("cfg_ref", cfg_ref)):
            if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 20.0):
                raise ValueError(f"{flag} must be a guidance scale in [0, 20] (1 = no guidance), got {value!r}")
        g = self.guidance
        guidance = replace(g, cfg_a=g.cfg_a if cfg_audio is None else float(cfg_audio),
                           cfg_r=g.cfg_r if cfg_ref is None else float(cfg_ref))
        return replace(self, guidance=guidance)

    def run(self, *, denoiser: Denoiser, noise: Tensor) -> SampleResult:
        """Sample one chunk from ``noise`` at t = 1 (chunk samplers; a rolling one runs per call)."""
        if self.rolling:
            raise ValueError(f"sampler {self.name!r} runs frames in flight, not chunks: use AvatarPipeline.advance "
                             "(StreamingSession does)")
        sample = ddim_sample if isinstance(self.plan, DDIMPlan) else student_sample
        return sample(denoiser=denoiser, noise=noise, guidance=self.guidance, plan=self.plan)


_STUDENT_PLAN = StudentPlan.make(num_steps=6)
_TEACHER_PLAN = DDIMPlan.trailing(num_steps=25)
_TEACHER_PLAN_6 = DDIMPlan.trailing(num_steps=6)
_CONDITIONAL = Guidance(mode="conditional")

SAMPLERS: dict[str, SamplerSpec] = {spec.name: spec for spec in (
    SamplerSpec("fast", "student", FAST_GUIDANCE, _STUDENT_PLAN),
    # the streaming student: one step per PeRFlow window, frames in flight (4 NFE per frame, docs/design.md §8)
    # look-ahead 1 frame instead of 2: the same Sync-D on quality table 8 (0 frames: +1.6 %), 40 ms less latency
    SamplerSpec("stream", "student", FAST_GUIDANCE, StudentPlan.make(num_steps=4), rolling=True, lookahead=1),
    SamplerSpec("balanced", "student", BALANCED_GUIDANCE, _STUDENT_PLAN),
    SamplerSpec("teacher", "teacher", TEACHER_GUIDANCE, _TEACHER_PLAN),
    # comparison points of the quality tables (paper Table 4 and "the gain of distillation"):
    SamplerSpec("teacher-6x3", "teacher", TEACHER_GUIDANCE, _TEACHER_PLAN_6),
    SamplerSpec("teacher-6x1", "teacher", _CONDITIONAL, _TEACHER_PLAN_6),
    SamplerSpec("balanced-conditional", "student", _CONDITIONAL, _STUDENT_PLAN),
)}


