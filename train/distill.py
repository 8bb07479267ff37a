"""FADA distillation (paper §3.1–3.3, DESIGN.md §3.3–3.6).

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
   segment (§3.5); ``L_distill``, ``L_GT`` per sample; ``W(R)`` (Eq. 8, detached);
   ``L_total = mean(L_distill + W L_GT)`` (Eq. 7) — both student forwards in one batch.

The teacher's window ends can be cached on disk (``--solve-cache``): a solve is a pure function of
the teacher, the cached data and the draws of (seed, step, rank), so every variant sharing those
reuses them. Per-sample ``R`` and ``W`` go to ``samples.csv`` with the clip's analysis label (tier
and kind) when the dataset has labels — for analysis only; training never reads them.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fada_rt.config import CFG_MODES
from fada_rt.models.fada import BranchedDenoiser, ChunkConditions, FadaModel
from fada_rt.sampling import (
    GTWeightConfig,
    Guidance,
    PerflowWindows,
    WindowSolvePlan,
    draw_training_times,
    ground_truth_end,
    mixed_supervision_loss,
    perflow_target,
    student_input,
    teacher_window_solve,
    window_start_latent,
)
from train.data import (
    ChunkBatch,
    ChunkSampler,
    add_rollout_options,
    check_motion_noise_steps,
    check_noise_sharing_max,
    draw_shared_noise,
    trained_rollout,
)
from train.loop import LoopConfig, add_max_minutes, run_training, step_seed, time_limit_of
from train.sample_log import log_samples, read_labels_for
from train.solve_cache import SolveCache
from train.weighting import (
    MOTION_MAPS,
    check_motion_map,
    check_motion_weight,
    fixed_motion_map,
    pixel_weights,
)


@dataclass(frozen=True)
class DistillConfig:
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=2000, lr=5e-5, warmup_steps=100,
                                                                ema_decay=0.995, checkpoint_every=250))
    batch_size: int = 4
    manifest: str = "B"
    cfg_mode: str = "layer_tokens"  # "none": balanced (branch-wise) student
    gt: GTWeightConfig = field(default_factory=GTWeightConfig)  # fixed w0=0: no ground-truth loss
    num_windows: int = 4
    substeps: int = 8
    target: str = "ddim_eps"
    cfg_a_range: tuple[float, float] = (1.0, 8.0)
    cfg_r_range: tuple[float, float] = (1.0, 3.5)
    p_drop_audio: float = 0.1
    p_drop_both: float = 0.1
    p_motion_from_reference: float = 0.1
    #: motion latents forward-noised to U{0..N-1} (train/data.py), as the teacher trained with
    motion_noise_steps: int = 0
    #: mixed noise prior of the window starts' eps (train/data.py), as the teacher trained with
    noise_sharing_max: float = 0.0
    #: the first motion slot holds the reference latent (train/data.py), as the runtime's RolloutConfig.reference_sink
    reference_sink: bool = False
    #: per-pixel weight of moving regions in both losses (train/weighting.py); 0: uniform (the paper)
    motion_weight: float = 0.0
    #: its per-pixel motion: "chunk" (each chunk's own) or "dataset" (one fixed map), as train.teacher --motion-map
    motion_map: str = "chunk"
    #: learning rate of the CFG conditioning the student adds (tokens, CFG layers) as a multiple of
    #: loop.lr: it starts inert (zero output projection) and must learn the whole scale response
    cfg_lr_scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.cfg_mode not in CFG_MODES:
            raise ValueError(f"cfg_mode must be one of {CFG_MODES}, got {self.cfg_mode!r}")
        check_motion_weight(self.motion_weight)
        check_motion_map(self.motion_map)
        check_motion_noise_steps(self.motion_noise_steps)
        check_noise_sharing_max(self.noise_sharing_max)
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
}


# ---- the teacher side ------------------------------------------------------------------------------

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
    t: Tensor  # (B,) training time
    window: Tensor  # (B,) int64
    cfg: Tensor  # (B, 2) [cfg_a, cfg_r]
    keep_audio: Tensor  # (B,) bool
    keep_ref: Tensor  # (B,) bool


def draw_step(batch: ChunkBatch, config: DistillConfig, windows: PerflowWindows, *, step: int, rank: int) -> StepDraws:
    gen = torch.Generator().manual_seed(step_seed(config.seed, step, rank, stream=2))
    b = batch.x0.shape[0]
    eps = torch.randn(batch.x0.shape, generator=gen)
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
    labels: dict[str, dict[str, Any]] | None = None,
    stop_after: int | None = None,
    time_limit: float | None = None,
    validate=None,
    validate_every: int = 0,
    info: dict[str, Any] | None = None,
) -> list[float]:
    """Distil a student from ``teacher`` into ``run_dir`` (resumable); returns this call's losses. The
    teacher is moved to the run's device (accelerate's: a GPU where there is one) and left there."""
    windows = PerflowWindows(num_windows=config.num_windows, target=config.target)
    plan = WindowSolvePlan.make(windows=windows, substeps=config.substeps)
    student = teacher.make_student(config.cfg_mode, seed=config.seed).set_trainable().train()  # runs repeat
    student.config = trained_rollout(student.config, motion_noise_steps=config.motion_noise_steps,
                                     noise_sharing_max=config.noise_sharing_max, reference_sink=config.reference_sink)
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
        d = draw_step(batch, config, windows, step=step, rank=rank)
        d = StepDraws(*(x.to(device) for x in dataclasses.astuple(d)))
        z_end = solve_cache.get(step, rank) if solve_cache is not None else None
        if z_end is None:
            z_start = window_start_latent(x0=batch.x0, eps=d.eps, window=d.window, windows=windows)
            z_end = teacher_solve(teacher, batch, d, z_start, plan, config)
            if solve_cache is not None:
                solve_cache.put(step, rank, z_end)
        out = compute_losses(objective=obj, batch=batch, draws=d, z_end=z_end.to(device), windows=windows,
                             config=config)
        if rank == 0:
            log_samples(sample_log, step + 1, batch, d, out, labels)
        return out.total, out.logs()

    return run_training(model=student, objective=objective, step_fn=step_fn, loop=config.loop,
                        run_config=_json_ready(dataclasses.asdict(config)), run_dir=run_dir, role="student",
                        run_config_defaults=_json_ready(dataclasses.asdict(DistillConfig())),
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


def compute_losses(*, objective: nn.Module, batch: ChunkBatch, draws: StepDraws, z_end: Tensor,
                   windows: PerflowWindows, config: DistillConfig) -> DistillLosses:
    """Student inputs and targets on the teacher segment (fixed Eq. 3, Eq. 4) and, with mixed
    supervision, on the ground-truth segment (§3.5); one student forward for both; Eq. 7–8."""
    d = draws
    z_start = window_start_latent(x0=batch.x0, eps=d.eps, window=d.window, windows=windows)
    seg = {"z_start": z_start, "t": d.t, "window": d.window, "windows": windows}
    z_t = student_input(z_end=z_end, **seg)
    target = perflow_target(z_start=z_start, z_end=z_end, window=d.window, windows=windows)
    timestep = (d.t.float() * windows.schedule.num_train_timesteps).to(z_t.device)  # student: 1000 t
    if not config.uses_gt:
        l_distill = objective(batch, z_t, timestep, target, d, config.cfg_conditioned)
        nan = torch.full_like(l_distill, float("nan"))
        return DistillLosses(l_distill.mean(), l_distill, nan, nan, torch.zeros_like(l_distill))
    z_gt_end = ground_truth_end(x0=batch.x0, eps=d.eps, window=d.window, windows=windows)
    z_t_gt = student_input(z_end=z_gt_end, **seg)
    target_gt = perflow_target(z_start=z_start, z_end=z_gt_end, window=d.window, windows=windows)
    losses = objective(batch, torch.cat([z_t, z_t_gt]), timestep.repeat(2), torch.cat([target, target_gt]), d,
                       config.cfg_conditioned)
    l_distill, l_gt = losses.chunk(2)
    mixed = mixed_supervision_loss(l_distill=l_distill, l_gt=l_gt, config=config.gt)
    return DistillLosses(mixed.total, l_distill, l_gt, mixed.ratio, mixed.weight)


@torch.no_grad()
def teacher_solve(teacher: FadaModel, batch: ChunkBatch, d: StepDraws, z_start: Tensor, plan: WindowSolvePlan,
                  config: DistillConfig) -> Tensor:
    """The teacher's window end ``zhat_{t_{k-1}}`` (Eq. 2) for each sample of the batch."""
    conditions = teacher.conditions(batch.reference, batch.motion, batch.audio)
    if config.cfg_conditioned:
        denoiser = BranchedDenoiser(teacher.denoiser, conditions)
        guidance = Guidance(mode="multi", cfg_a=d.cfg[:, 0], cfg_r=d.cfg[:, 1])
    else:
        denoiser = SampleBranchDenoiser(teacher, conditions, d.keep_audio, d.keep_ref)
        guidance = Guidance(mode="conditional")
    return teacher_window_solve(denoiser=denoiser, z_start=z_start, window=d.window, guidance=guidance,
                                plan=plan).z_end


def _json_ready(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _json_ready(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_json_ready(v) for v in data]
    return data


def main(argv: list[str] | None = None) -> None:
    from fada_rt.checkpoint import load_model
    from train.cache import open_cache, weights_digest
    from train.clips import read_manifest
    from train.loop import command_line

    p = argparse.ArgumentParser(description="Distil a FADA student from a teacher (PeRFlow + mixed supervision "
                                            "+ multi-CFG distillation).")
    p.add_argument("--teacher", required=True, help="teacher checkpoint folder (python -m train.teacher)")
    p.add_argument("--data", required=True, help="dataset folder (manifests; labels are read for logging only)")
    p.add_argument("--cache", required=True, help="latent cache folder built with the teacher's VAE")
    p.add_argument("--run", required=True, help="run folder: checkpoints, metrics.csv, samples.csv, student/")
    p.add_argument("--variant", default="fast", choices=sorted(VARIANTS), help="configuration of Tables 2-4")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the variant's)")
    p.add_argument("--batch-size", type=int, default=None, help="chunks per step (default: the variant's)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the variant's)")
    p.add_argument("--solve-cache", default=None, help="folder caching the teacher's window solves")
    p.add_argument("--stop-after", type=int, default=None, help="stop at this step (resume later)")
    add_max_minutes(p)
    p.add_argument("--seed", type=int, default=0, help="seed of data, noise, window and scale draws")
    p.add_argument("--validate-every", type=int, default=0, help="steps between validation videos (0: never)")
    p.add_argument("--val-data", default=None, help="held-out dataset for validation videos")
    p.add_argument("--val-clips", type=int, default=4, help="held-out clips per validation")
    add_rollout_options(p)  # give the teacher's
    p.add_argument("--motion-weight", type=float, default=0.0,
                   help="weight of moving pixels (mouth, eyes) in the losses, as train.teacher --motion-weight; "
                        "0: uniform pixels")
    p.add_argument("--motion-map", default="chunk", choices=MOTION_MAPS,
                   help="where --motion-weight's per-pixel motion comes from, as train.teacher --motion-map")
    p.add_argument("--cfg-a-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="CFG-conditioned variants: range of the audio scale cfg_a drawn per sample (Eq. 9; "
                        "default: the variant's, 1 8)")
    p.add_argument("--cfg-r-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="CFG-conditioned variants: range of the reference scale cfg_r drawn per sample "
                        "(default: the variant's, 1 3.5)")
    p.add_argument("--cfg-lr-scale", type=float, default=None,
                   help="CFG-conditioned variants: learning rate of the added CFG tokens and layers as a multiple "
                        "of --lr (default: the variant's)")
    args = p.parse_args(argv)
    config = VARIANTS[args.variant]
    loop = dataclasses.replace(config.loop, **{k: v for k, v in (("steps", args.steps), ("lr", args.lr))
                                               if v is not None})
    cfg_options = {k: tuple(v) for k, v in (("cfg_a_range", args.cfg_a_range), ("cfg_r_range", args.cfg_r_range))
                   if v is not None}
    if args.cfg_lr_scale is not None:
        cfg_options["cfg_lr_scale"] = args.cfg_lr_scale
    if cfg_options and not config.cfg_conditioned:
        p.error(f"--cfg-a-range / --cfg-r-range / --cfg-lr-scale are for CFG-conditioned variants; "
                f"{args.variant!r} is branch-wise")
    config = dataclasses.replace(config, loop=loop, seed=args.seed, motion_noise_steps=args.motion_noise_steps,
                                 noise_sharing_max=args.noise_sharing_max, reference_sink=args.reference_sink,
                                 motion_weight=args.motion_weight, motion_map=args.motion_map, **cfg_options,
                                 batch_size=args.batch_size if args.batch_size is not None else config.batch_size)
    teacher, _ = load_model(args.teacher, role="teacher")
    clip_ids = read_manifest(args.data, config.manifest)
    cache = open_cache(args.cache, config=teacher.config, vae_digest=weights_digest(teacher.vae), clip_ids=clip_ids)
    sampler = ChunkSampler(cache, config=teacher.config, seed=config.seed,
                           p_motion_from_reference=config.p_motion_from_reference,
                           motion_noise_steps=config.motion_noise_steps, reference_sink=config.reference_sink)
    solve_cache = None
    if args.solve_cache:
        data_digest = hashlib.sha256(json.dumps(sorted(clip_ids)).encode() + weights_digest(teacher.vae).encode())
        solve_cache = SolveCache(args.solve_cache, teacher_digest=weights_digest(teacher),
                                 data_digest=data_digest.hexdigest(), config=config)
    validate = None
    if args.validate_every:
        from train.validate import Validator

        if args.val_data is None:
            raise ValueError("--validate-every needs --val-data (a held-out dataset)")
        validate = Validator(data=args.val_data, run_dir=args.run, num_clips=args.val_clips,
                             sampler="fast" if config.cfg_conditioned else "balanced")
    info = {"command": command_line("train.distill", argv), "variant": args.variant, "teacher": str(args.teacher),
            "train_clips": len(sampler)}
    losses = distill(teacher=teacher, sampler=sampler, config=config, run_dir=args.run, solve_cache=solve_cache,
                     labels=read_labels_for(args.data, clip_ids), stop_after=args.stop_after,
                     time_limit=time_limit_of(args), validate=validate,
                     validate_every=args.validate_every, info=info)
    if losses:
        print(f"steps run: {len(losses)}; mean loss of the last 100: {sum(losses[-100:]) / len(losses[-100:]):.4f}")


if __name__ == "__main__":
    main()
