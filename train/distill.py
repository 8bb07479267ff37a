"""FADA distillation (paper §3.1–3.3, docs/design.md §3.3–3.6).

``python -m train.distill --teacher DIR --data DIR --cache DIR --run DIR --variant fast``

The student starts as a copy of the teacher plus the CFG conditioning of its ``cfg_mode``
(zero-initialised: it equals the teacher at step 0). Per sample of a step:

1. a chunk of the (lenient) set B, ``eps``, a training time ``t`` and its window ``k``;
2. the teacher solves the window from ``z_{t_k}`` to ``zhat_{t_{k-1}}`` with ``S`` DDIM substeps:
   * CFG-conditioned students (``fast``): with the multi-CFG prediction (Eq. 9) at per-sample
     scales drawn from ``cfg_a_range`` x ``cfg_r_range``, which the student sees through its
     CFG conditioning (Eq. 10 tokens, or a variant) — one student branch per step at inference.
     The ranges should be centred on the scales you will deploy (``--cfg-a-range``, ``--cfg-r-range``):
     what the student does not learn of the scale response it replaces by the range's mean output;
   * students without CFG conditioning (``balanced``): each sample gets one CFG branch by
     condition dropout (as the teacher was trained) and the teacher solves that branch's
     conditional flow; at inference the three branches are combined by Eq. 9 (18 NFE);
3. student input and target on the teacher segment (fixed Eq. 3, Eq. 4) and on the ground-truth
   segment (§3.5) — steps 1-3 are the library's :func:`fada_rt.sampling.make_distillation_batch`
   (:func:`distillation_batch`); ``L_distill``, ``L_GT`` per sample; ``W(R)`` (Eq. 8, detached);
   ``L_total = mean(L_distill + W L_GT)`` (Eq. 7) — both student forwards in one batch.

The teacher's window ends can be cached on disk (``--solve-cache``): a solve is a pure function of
the teacher, the cached data and the draws of (seed, step, rank), so every variant sharing those
reuses them. Per-sample ``R`` and ``W`` go to ``samples.csv`` with the clip's analysis label (tier
and kind) when the dataset has labels — for analysis only; training never reads them.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fada_rt.config import CFG_MODES, CFGMode
from fada_rt.models.fada import FadaModel
from fada_rt.sampling import (
    DistillationBatch,
    GTWeightConfig,
    PerflowWindows,
    WindowSolvePlan,
    mixed_supervision_loss,
)
from fada_rt.sampling.perflow import TargetKind
from train.cli import HelpFormatter, add_dataclass_options, config_dict, dataclass_from_args
from train.data import ChunkBatch, ChunkSampler, trained_rollout
from train.distill_teacher import StepDraws, distillation_batch, draw_step, window_frames
from train.loop import LoopConfig, RunOptions, TrainConfig, run_training
from train.sample_log import log_samples, read_labels_for
from train.solve_cache import SolveCache
from train.weighting import fixed_motion_map, pixel_weights


@dataclass(frozen=True)
class DistillConfig(TrainConfig):
    """Distillation (PeRFlow + mixed supervision + multi-CFG distillation): the options both trainers share
    (train.loop.TrainConfig) and the student's: its CFG conditioning, the windows and the teacher's solve,
    the scales it learns and the ground-truth loss."""

    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=2000, lr=5e-5, warmup_steps=100,
                                                                ema_decay=0.995, checkpoint_every=250))
    #: training manifest: the lenient set B (§3.5; the ground-truth loss's weight keeps its bad clips in check)
    #: or the strict set A
    manifest: str = "B"
    #: the CFG conditioning the student adds (Eq. 10 tokens, or a variant): one student branch per step at
    #: inference; "none": a balanced student, trained branch by branch, its branches combined by Eq. 9
    cfg_mode: CFGMode = "layer_tokens"
    #: the weight W(R) of the ground-truth loss (Eq. 8; fada_rt.sampling.GTWeightConfig, the paper's defaults):
    #: its mode, W0 (w0), exponent s, R_p (r_peak) and R_d (r_dead); mode fixed with w0 = 0: no ground-truth loss
    gt: GTWeightConfig = field(default_factory=GTWeightConfig)
    #: PeRFlow windows K
    num_windows: int = 4
    #: the teacher's DDIM substeps S per window (one that lands on every window end: 5, 8, 10 for K = 4)
    substeps: int = 8
    #: the student's PeRFlow target (fada_rt.sampling.PerflowWindows)
    target: TargetKind = "ddim_eps"
    #: CFG-conditioned students: range of the audio scale cfg_a drawn per sample (Eq. 9). Centre it on the
    #: scale you will deploy: what the student does not learn of the scale response it replaces by the
    #: range's mean output
    cfg_a_range: tuple[float, float] = field(default=(1.0, 8.0), metadata={"metavar": ("LOW", "HIGH")})
    #: CFG-conditioned students: range of the reference scale cfg_r drawn per sample (Eq. 9)
    cfg_r_range: tuple[float, float] = field(default=(1.0, 3.5), metadata={"metavar": ("LOW", "HIGH")})
    #: CFG-conditioned students: learning rate of the CFG conditioning the student adds (tokens, CFG layers) as a
    #: multiple of the learning rate: it starts inert (zero output projection) and must learn the whole scale
    #: response
    cfg_lr_scale: float = 1.0
    #: the streaming student of the rolling sampler (docs/design.md §8): 0 trains on whole chunks at one noise
    #: level; N > 0 on windows of 1..N frames (the first after the motion frames) at per-frame, monotone levels
    #: (fada_rt.sampling.draw_frame_times), each frame's target from the teacher's solve of the clip at its window
    stream_frames: int = 0
    #: streaming student: the share of samples drawn as a full pipeline (consecutive windows) rather than sorted
    #: independent levels
    p_pipeline: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.stream_frames, int) or self.stream_frames < 0:
            raise ValueError(f"stream_frames must be an int >= 0 (0: chunk student), got {self.stream_frames!r}")
        if not 0.0 <= self.p_pipeline <= 1.0:
            raise ValueError(f"p_pipeline must be in [0, 1], got {self.p_pipeline}")
        if self.stream_frames and self.motion_weight > 0 and self.motion_map == "chunk":
            raise ValueError("a streaming student's windows may hold one frame, too few for each chunk's own motion "
                             "map: use motion_map 'dataset' (or motion_weight 0)")
        if self.cfg_mode not in CFG_MODES:
            raise ValueError(f"cfg_mode must be one of {CFG_MODES}, got {self.cfg_mode!r}")
        if not (math.isfinite(self.cfg_lr_scale) and self.cfg_lr_scale > 0):
            raise ValueError(f"cfg_lr_scale must be a finite number > 0, got {self.cfg_lr_scale}")
        for name in ("cfg_a_range", "cfg_r_range"):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo <= hi):
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {(lo, hi)}; "
                                 "scale 1 is no guidance, the shipped default is 2 / 1")

    @property
    def uses_gt(self) -> bool:
        return not (self.gt.mode == "fixed" and self.gt.w0 == 0.0)

    @property
    def cfg_conditioned(self) -> bool:
        return self.cfg_mode != "none"

    def solve_key(self) -> dict[str, Any]:
        """The config fields a teacher solve depends on (shared by variants that differ elsewhere)."""
        keys = ["batch_size", "manifest", "num_windows", "substeps", "seed", "p_motion_from_reference", "motion_noise_steps",
                "noise_sharing_max", "reference_sink"]
        keys += ["audio_augment"] if self.audio_augment else []  # solves of runs without it keep their key
        keys += ["stream_frames", "p_pipeline"] if self.stream_frames else []
        keys += ["cfg_a_range", "cfg_r_range"] if self.cfg_conditioned else ["p_drop_audio", "p_drop_both"]
        return {"conditioning": "cfg" if self.cfg_conditioned else "branch",
                **{k: getattr(self, k) for k in keys}}


# ---- the variants of the paper's Tables 2-4 -----------------------------------------------------

def _variant(**kw: Any) -> DistillConfig:
    return dataclasses.replace(DistillConfig(), **kw)


ADAPTIVE_025 = GTWeightConfig(mode="adaptive", s=0.25)
VARIANTS: dict[str, DistillConfig] = {
    "perflow-A": _variant(manifest="A", cfg_mode="none", gt=GTWeightConfig(mode="fixed", w0=0.0)),
    "B-fixed-0": _variant(cfg_mode="none", gt=GTWeightConfig(mode="fixed", w0=0.0)),
    "B-fixed-0.2": _variant(cfg_mode="none", gt=GTWeightConfig(mode="fixed", w0=0.2)),
    "B-fixed-1.0": _variant(cfg_mode="none", gt=GTWeightConfig(mode="fixed", w0=1.0)),
    "B-unlimited-0.5": _variant(cfg_mode="none", gt=GTWeightConfig(mode="unlimited", s=0.5)),
    "B-unlimited-0.25": _variant(cfg_mode="none", gt=GTWeightConfig(mode="unlimited", s=0.25)),
    "B-adaptive-0.5": _variant(cfg_mode="none", gt=GTWeightConfig(mode="adaptive", s=0.5)),
    "balanced": _variant(cfg_mode="none", gt=ADAPTIVE_025),  # = B-adaptive-0.25
    "cfg-time-embed": _variant(cfg_mode="time_embed", gt=ADAPTIVE_025),
    "cfg-layer-mlp": _variant(cfg_mode="layer_mlp", gt=ADAPTIVE_025),
    "fast": _variant(cfg_mode="layer_tokens", gt=ADAPTIVE_025),  # CFG layer with tokens
    # the fast student for the rolling sampler: per-frame levels over windows of up to K frames
    "stream": _variant(cfg_mode="layer_tokens", gt=ADAPTIVE_025, stream_frames=4),
}


# ---- the student side ----------------------------------------------------------------------------

class DistillObjective(nn.Module):
    """Per-sample ``L_distill`` and ``L_GT`` of the student (one forward for both); DDP wraps it."""

    def __init__(self, student: FadaModel, motion_weight: float = 0.0, motion_map: Tensor | None = None) -> None:
        super().__init__()
        self.student = student
        self.motion_weight = motion_weight
        self.register_buffer("motion_map", motion_map, persistent=False)  # None: each chunk's own map

    def forward(self, batch: ChunkBatch, z_in: Tensor, timestep: Tensor, targets: Tensor, draws: StepDraws,
                cfg_conditioned: bool) -> Tensor:
        """z_in, targets: (R*B, F, C, h, w) stacked segments (R = 1 or 2); returns (R*B,) losses."""
        s = self.student
        reps = z_in.shape[0] // batch.x0.shape[0]
        reference = s.reference(batch.reference)
        motion = s.motion_features(batch.motion)
        tokens = s.audio_proj(batch.audio) * draws.keep_audio.view(-1, 1, 1, 1).to(z_in.dtype)

        def tile(x: Tensor) -> Tensor:
            return x.repeat((reps,) + (1,) * (x.dim() - 1))

        pred = s.denoiser(z_in, timestep, tile(tokens), [tile(k) for k in reference.keys],
                          [tile(v) for v in reference.values], [tile(m) for m in motion],
                          ref_mask=None if cfg_conditioned else tile(draws.keep_ref),
                          cfg=tile(draws.cfg.to(z_in.dtype)) if cfg_conditioned else None)
        err = (pred.float() - targets.float()).square() * tile(pixel_weights(batch.x0, self.motion_weight,
                                                                           self.motion_map))
        return err.flatten(1).mean(1)


def distill(
    *,
    teacher: FadaModel,
    sampler: ChunkSampler,
    config: DistillConfig,
    run_dir: str | Path,
    solve_cache: SolveCache | None = None,
    init: FadaModel | None = None,
    labels: dict[str, dict[str, Any]] | None = None,
    stop_after: int | None = None,
    time_limit: float | None = None,
    validate=None,
    validate_every: int = 0,
    info: dict[str, Any] | None = None,
) -> list[float]:
    """Distil a student from ``teacher`` into ``run_dir`` (resumable); returns this call's losses. The student
    starts as the teacher plus ``config.cfg_mode``'s conditioning, or as a copy of ``init`` (a student of that
    mode, e.g. the fast student a streaming student is tuned from). The teacher is moved to the run's device
    (accelerate's: a GPU where there is one) and left there."""
    windows = PerflowWindows(num_windows=config.num_windows, target=config.target)
    plan = WindowSolvePlan.make(windows=windows, substeps=config.substeps)
    if init is None:
        student = teacher.make_student(config.cfg_mode, seed=config.seed)  # runs repeat
    elif init.config.cfg.mode != config.cfg_mode:
        raise ValueError(f"the student to start from has cfg mode {init.config.cfg.mode!r}, this run trains "
                         f"{config.cfg_mode!r}: start from a student of the same variant family")
    else:
        student = copy.deepcopy(init)
    student = student.set_trainable().train()
    anchor = student.config.rollout.motion_anchor  # a runtime setting (checkpoint --set-rollout): kept
    student.config = trained_rollout(student.config, motion_noise_steps=config.motion_noise_steps,
                                     noise_sharing_max=config.noise_sharing_max, reference_sink=config.reference_sink)
    student.config = student.config.replace(rollout=dataclasses.replace(student.config.rollout, motion_anchor=anchor))
    teacher = teacher.eval()  # its solves run under no_grad
    fixed_map = fixed_motion_map(config.motion_map, sampler, config.motion_weight)
    objective = DistillObjective(student, config.motion_weight, fixed_map)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    sample_log = run_dir / "samples.csv"
    labels = labels or {}
    teacher_device: torch.device | None = None

    def step_fn(obj: nn.Module, step: int, rank: int, device: torch.device) -> tuple[Tensor, dict[str, float]]:
        nonlocal teacher_device
        if teacher_device != device:  # the frozen teacher follows the student onto the run's device
            teacher.to(device)  # (accelerate moves only the objective, which holds the student)
            teacher_device = device
        batch = sampler.batch(step=step, batch_size=config.batch_size, rank=rank).to(device)
        batch = batch.first_frames(window_frames(config, batch.x0.shape[1], step=step, rank=rank))
        d = draw_step(batch, config, windows, step=step, rank=rank)
        d = StepDraws(*(x.to(device) for x in dataclasses.astuple(d)))
        cached = solve_cache.get(step, rank) if solve_cache is not None else None
        targets = distillation_batch(teacher, batch, d, plan, config,
                                     z_end=None if cached is None else cached.to(device))
        if solve_cache is not None and cached is None:
            solve_cache.put(step, rank, targets.z_end)
        out = compute_losses(objective=obj, batch=batch, draws=d, targets=targets, config=config)
        if rank == 0:
            log_samples(sample_log, step + 1, batch, d, out, labels)
        return out.total, out.logs()

    return run_training(model=student, objective=objective, step_fn=step_fn, loop=config.loop,
                        run_config=config_dict(config), run_dir=run_dir, role="student",
                        run_config_defaults=config_dict(DistillConfig()),
                        lr_scale=lambda name: config.cfg_lr_scale if student.is_cfg_parameter(name) else 1.0,
                        stop_after=stop_after, time_limit=time_limit, validate=validate,
                        validate_every=validate_every, info=info)


@dataclass
class DistillLosses:
    """Eq. 5–8 of one step: per-sample (B,) terms and the reduced total."""

    total: Tensor
    l_distill: Tensor
    l_gt: Tensor  # NaN where the variant has no ground-truth loss
    ratio: Tensor  # R = L_GT / L_distill, detached (NaN without L_GT)
    weight: Tensor  # W(R), detached

    def logs(self) -> dict[str, float]:
        return {"l_distill": self.l_distill.mean().item(), "l_gt": self.l_gt.mean().item(),
                "ratio_mean": self.ratio.mean().item(), "weight_mean": self.weight.mean().item(),
                "weight_zero_share": (self.weight == 0).float().mean().item()}


def compute_losses(*, objective: nn.Module, batch: ChunkBatch, draws: StepDraws, targets: DistillationBatch,
                   config: DistillConfig) -> DistillLosses:
    """Eq. 5-8 on the step's student inputs and targets (:func:`distillation_batch`): the teacher segment and,
    with mixed supervision, the ground-truth segment, in one student forward."""
    d, tg = draws, targets
    if not config.uses_gt:
        l_distill = objective(batch, tg.z_t, tg.timestep, tg.target, d, config.cfg_conditioned)
        nan = torch.full_like(l_distill, float("nan"))
        return DistillLosses(l_distill.mean(), l_distill, nan, nan, torch.zeros_like(l_distill))
    if tg.z_t_gt is None or tg.target_gt is None:
        raise ValueError(f"the ground-truth loss ({config.gt}) needs the batch's ground-truth segment")
    losses = objective(batch, torch.cat([tg.z_t, tg.z_t_gt]), torch.cat([tg.timestep, tg.timestep]),
                       torch.cat([tg.target, tg.target_gt]), d, config.cfg_conditioned)
    l_distill, l_gt = losses.chunk(2)
    mixed = mixed_supervision_loss(l_distill=l_distill, l_gt=l_gt, config=config.gt)
    return DistillLosses(mixed.total, l_distill, l_gt, mixed.ratio, mixed.weight)


def build_parser(variant: str = "fast") -> argparse.ArgumentParser:
    """``python -m train.distill``'s options: the teacher and the variant, then :class:`train.loop.RunOptions`
    and :class:`DistillConfig` (train/cli.py: one option per field) with ``variant``'s defaults."""
    p = argparse.ArgumentParser(prog="python -m train.distill", formatter_class=HelpFormatter,
                                description="Distil a FADA student from a teacher (PeRFlow + mixed supervision "
                                            "+ multi-CFG distillation).")
    p.add_argument("--teacher", required=True, help="teacher checkpoint folder (python -m train.teacher)")
    p.add_argument("--variant", default="fast", choices=sorted(VARIANTS),
                   help="configuration of the paper's Tables 2-4: the defaults of the DistillConfig options "
                        "(--help shows those of the --variant given)")
    p.add_argument("--solve-cache", default=None, help="folder caching the teacher's window solves")
    p.add_argument("--init-student", default=None,
                   help="start from this student checkpoint (of the variant's cfg mode) instead of the teacher, "
                        "e.g. the fast student a --variant stream run tunes")
    add_dataclass_options(p, RunOptions)
    add_dataclass_options(p, DistillConfig, defaults=VARIANTS[variant], inline=("loop",))
    return p


def _variant_of(argv: list[str] | None) -> str:
    """The --variant of a command line (its defaults are the parser's); an unknown one is left to the parser."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--variant", default="fast")
    variant = pre.parse_known_args(argv)[0].variant
    return variant if variant in VARIANTS else "fast"


#: DistillConfig options only CFG-conditioned students read
CFG_OPTIONS = ("cfg_a_range", "cfg_r_range", "cfg_lr_scale")


def main(argv: list[str] | None = None) -> None:
    from fada_rt.checkpoint import load_model
    from fada_rt.clips import read_manifest
    from train.cache import open_cache, weights_digest
    from train.loop import command_line

    variant = _variant_of(argv)
    p = build_parser(variant)
    args = p.parse_args(argv)
    base = VARIANTS[args.variant]
    try:
        run = dataclass_from_args(RunOptions, args)
        config = dataclass_from_args(DistillConfig, args, defaults=base)
    except ValueError as e:
        p.error(str(e))
    changed = [name for name in CFG_OPTIONS if getattr(config, name) != getattr(base, name)]
    if changed and not config.cfg_conditioned:
        p.error(f"{', '.join('--' + n.replace('_', '-') for n in changed)}: for CFG-conditioned students; "
                f"{args.variant!r} (cfg_mode {config.cfg_mode!r}) is branch-wise")
    teacher, _ = load_model(args.teacher, role="teacher")
    clip_ids = read_manifest(run.data, config.manifest)
    cache = open_cache(run.cache, config=teacher.config, vae_digest=weights_digest(teacher.vae), clip_ids=clip_ids)
    sampler = ChunkSampler(cache, config=teacher.config, seed=config.seed,
                           p_motion_from_reference=config.p_motion_from_reference,
                           motion_noise_steps=config.motion_noise_steps, reference_sink=config.reference_sink,
                           audio_augment=config.audio_augment)
    solve_cache = None
    if args.solve_cache:
        data_digest = hashlib.sha256(json.dumps(sorted(clip_ids)).encode() + weights_digest(teacher.vae).encode())
        solve_cache = SolveCache(args.solve_cache, teacher_digest=weights_digest(teacher),
                                 data_digest=data_digest.hexdigest(), config=config)
    validate = None
    if run.validate_every:
        from train.validate import Validator

        validate = Validator(data=run.val_data, run_dir=run.run, num_clips=run.val_clips,
                             sampler="fast" if config.cfg_conditioned else "balanced")
    info = {"command": command_line("train.distill", argv), "variant": args.variant, "teacher": str(args.teacher),
            "train_clips": len(sampler)}
    init = load_model(args.init_student, role="student")[0] if args.init_student else None
    if init is not None:
        info["init_student"] = str(args.init_student)
    losses = distill(teacher=teacher, sampler=sampler, config=config, run_dir=run.run, solve_cache=solve_cache,
                     init=init,
                     labels=read_labels_for(run.data, clip_ids), stop_after=run.stop_after,
                     time_limit=run.time_limit, validate=validate, validate_every=run.validate_every, info=info)
    if losses:
        print(f"steps run: {len(losses)}; mean loss of the last 100: {sum(losses[-100:]) / len(losses[-100:]):.4f}")


if __name__ == "__main__":
    main()
