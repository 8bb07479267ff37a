"""The one training loop of teacher training and distillation.

accelerate (DDP and mixed precision on GPUs, plain on CPU), AdamW with linear warm-up, gradient
clipping, EMA, resumable checkpoints (:mod:`train.state`), a progress bar and a metric log. The
caller supplies ``step_fn(step, rank, device) -> (loss, logs)``: everything random inside it must
be drawn from ``(seed, step, rank)`` (see :func:`step_seed`), which makes a resumed run replay the
uninterrupted one exactly.
"""

from __future__ import annotations

import csv
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from fada_rt.checkpoint import save_model
from fada_rt.models.fada import FadaModel
from fada_rt.precision import Precision
from train.data import check_audio_augment, check_motion_noise_steps, check_noise_sharing_max
from train.ema import EMA
from train.state import latest_step_dir, load_training_state, save_training_state, step_dir
from train.weighting import MOTION_MAPS, check_motion_map, check_motion_weight


@dataclass(frozen=True)
class LoopConfig:
    """The optimizer and the loop: AdamW with linear warm-up, gradient clipping, EMA, mixed precision,
    checkpoints and logging."""

    #: total optimizer steps of the run (resuming goes on to this step)
    steps: int = 20000
    #: peak learning rate (AdamW)
    lr: float = 2e-4
    #: steps of the linear learning-rate warm-up
    warmup_steps: int = 500
    #: AdamW's weight decay
    weight_decay: float = 0.01
    #: gradient-norm clipping threshold
    grad_clip: float = 1.0
    #: decay of the exponential moving average of the weights (the exported model)
    ema_decay: float = 0.999
    #: mixed precision on GPUs (accelerate): fp32 (none), fp16 or bf16; "no" reads as fp32 (older runs)
    mixed_precision: Precision = Precision.FP32
    #: steps between resumable checkpoints (and exports of RUN/<role>-latest)
    checkpoint_every: int = 1000
    #: resumable checkpoints kept (the newest)
    keep_checkpoints: int = 2
    #: steps between rows of metrics.csv
    log_every: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "mixed_precision", Precision.parse(self.mixed_precision))


@dataclass(frozen=True)
class TrainConfig:
    """What both trainers' configs share (train.teacher.TeacherTrainConfig and train.distill.DistillConfig
    extend it): the loop, the training chunks (train/data.py), condition dropout and the per-pixel loss
    weight (train/weighting.py). Saved with a run and compared on resume."""

    #: the optimizer and the loop (train.loop.LoopConfig): AdamW with linear warm-up, gradient clipping, EMA,
    #: mixed precision, checkpoints and logging
    loop: LoopConfig = field(default_factory=LoopConfig)
    #: chunks per step per process (GPU)
    batch_size: int = 4
    #: seed of every draw (data, noise, timesteps, condition dropout; distillation: windows and scales)
    seed: int = 0
    #: condition dropout: share of samples without audio (CFG branch "r" of Eq. 9; distillation: students
    #: without CFG conditioning only)
    p_drop_audio: float = 0.1
    #: condition dropout: share of samples without reference and audio (CFG branch "b" of Eq. 9)
    p_drop_both: float = 0.1
    #: share of chunks whose motion frames are all the reference latent (what the runtime feeds the first chunk)
    p_motion_from_reference: float = 0.1
    #: motion latents forward-noised to a training index drawn from U{0..N-1} per chunk (Hallo2): robustness to
    #: the model's own motion frames in long videos; 0: clean (the paper). A student trains with its teacher's
    motion_noise_steps: int = 0
    #: mixed noise prior: each sample's frames share a part rho ~ U(0, this) of their noise (PYoCo), for
    #: runtimes that share noise across frames (less flicker); 0: independent noise per frame
    noise_sharing_max: float = 0.0
    #: the first motion-frame slot holds the reference latent, the others the preceding frames: a clean anchor
    #: in the temporal context, as the runtime's RolloutConfig.reference_sink (off: all slots the preceding frames)
    reference_sink: bool = False
    #: share of chunks whose audio features come from one of the cache's augmented copies (microphone and call
    #: conditions: python -m train.cache --audio-variants K); 0: the clean audio
    audio_augment: float = 0.0
    #: weight K of moving pixels (mouth, eyes) in the loss: (1 + K s / mean(s)) / (1 + K), s = each latent
    #: pixel's std over the chunk: lip-sync detail; 0: uniform pixels (the paper)
    motion_weight: float = 0.0
    #: where the motion weight's per-pixel std comes from: each chunk's own frames ("chunk": tilts the optimum
    #: towards over-moving mouths) or the training set's mean ("dataset": one fixed lip-region map, unbiased)
    motion_map: str = field(default="chunk", metadata={"choices": MOTION_MAPS})

    def __post_init__(self) -> None:
        if self.p_drop_audio + self.p_drop_both >= 1:
            raise ValueError("p_drop_audio + p_drop_both must be < 1")
        check_motion_weight(self.motion_weight)
        check_motion_map(self.motion_map)
        check_motion_noise_steps(self.motion_noise_steps)
        check_noise_sharing_max(self.noise_sharing_max)
        check_audio_augment(self.audio_augment)


@dataclass(frozen=True)
class RunOptions:
    """Where a run reads and writes, and when it stops or validates: the trainers' options that are not
    part of the run's config (a resumed run may change them)."""

    #: dataset folder (its manifests; its clip labels are read for logging only)
    data: str
    #: latent cache folder (python -m train.cache), built with the model's VAE
    cache: str
    #: run folder: checkpoints, metrics.csv, TensorBoard logs and the exported model
    run: str
    #: return after this global step with a resumable checkpoint (run the command again to go on)
    stop_after: int | None = None
    #: stop after this many minutes of training with a resumable checkpoint (a time-limited machine; run the
    #: command again to go on)
    max_minutes: float | None = None
    #: steps between validation videos (0: never); needs val_data
    validate_every: int = 0
    #: held-out dataset for the validation videos
    val_data: str | None = None
    #: held-out clips per validation
    val_clips: int = 4

    def __post_init__(self) -> None:
        if self.validate_every and self.val_data is None:
            raise ValueError("validate_every needs val_data (a held-out dataset)")

    @property
    def time_limit(self) -> float | None:
        """:func:`run_training`'s ``time_limit`` (seconds), from ``max_minutes``."""
        return None if self.max_minutes is None else 60.0 * self.max_minutes


def step_seed(seed: int, step: int, rank: int, *, stream: int) -> int:
    """A 63-bit seed that depends only on (seed, step, rank, stream) — never on the process."""
    return int(np.random.SeedSequence([seed, step + 1, rank, stream]).generate_state(2, np.uint64)[0] >> 1)


def parameter_groups(model: nn.Module, lr_scale: Callable[[str], float] | None) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters, one per learning-rate scale (scale 1 first, then
    ascending), each with its ``lr_scale``; a model whose scales are all 1 has the one group of before."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    scale_of = {n: (1.0 if lr_scale is None else float(lr_scale(n))) for n, _ in named}
    bad = {n: s for n, s in scale_of.items() if not s > 0}
    if bad:
        raise ValueError(f"learning-rate scales must be > 0, got {bad}")
    scales = sorted(set(scale_of.values()), key=lambda s: (s != 1.0, s))
    return [{"params": [p for n, p in named if scale_of[n] == s], "lr_scale": s} for s in scales]


StepFn = Callable[[nn.Module, int, int, torch.device], tuple[Tensor, dict[str, float]]]


def run_training(
    *,
    model: FadaModel,
    objective: nn.Module,
    step_fn: StepFn,
    loop: LoopConfig,
    run_config: dict[str, Any],
    run_dir: str | Path,
    role: str,
    stop_after: int | None = None,
    validate: Callable[[FadaModel, int], dict[str, float]] | None = None,
    validate_every: int = 0,
    info: dict[str, Any] | None = None,
    run_config_defaults: dict[str, Any] | None = None,
    lr_scale: Callable[[str], float] | None = None,
    time_limit: float | None = None,
) -> list[float]:
    """Train ``model`` (through ``objective``, the module DDP wraps) from the newest checkpoint of
    ``run_dir``; returns this call's losses. ``run_config`` (JSON-able) must match on resume except
    for the number of steps; a key the saved run lacks (an option added since it started) counts as
    its value in ``run_config_defaults`` (the config class's defaults, which keep the old behaviour).
    ``lr_scale(name)``: a trainable parameter's learning rate as a multiple of ``loop.lr`` (one AdamW
    parameter group per distinct scale, the scale-1 group first; default: 1 for all).
    The EMA model is exported as a fada-rt checkpoint of ``role`` at each checkpoint
    (``RUN/<role>-latest``) and at the end (``RUN/<role>``).
    ``time_limit``: seconds of training after which the call checkpoints and returns early, like
    ``stop_after`` (a run on a time-limited machine; run the same command again to go on)."""
    from accelerate import Accelerator

    run_dir = Path(run_dir)
    accelerator = Accelerator(mixed_precision=loop.mixed_precision.accelerate, cpu=not torch.cuda.is_available())
    device = accelerator.device
    objective.to(device)
    groups = parameter_groups(model, lr_scale)
    params = [p for group in groups for p in group["params"]]
    optimizer = torch.optim.AdamW(groups, lr=loop.lr, weight_decay=loop.weight_decay)
    ema = EMA(model, loop.ema_decay)
    start = 0
    latest = latest_step_dir(run_dir)
    if latest is not None:
        meta = load_training_state(latest, model=model, ema=ema, optimizer=optimizer)
        saved = _normalized(_with_defaults(meta["run_config"], run_config_defaults or {}))
        if _without_steps(saved) != _without_steps(run_config):
            raise ValueError(f"{latest} was trained with another config; use a new run folder.\n"
                             f"saved: {meta['run_config']}\nnow:   {run_config}")
        for group, built in zip(optimizer.param_groups, groups):  # checkpoints before lr_scale lack the key
            group["lr_scale"] = built["lr_scale"]
        start = meta["step"]
        accelerator.print(f"resumed from {latest} at step {start}")
    objective, optimizer = accelerator.prepare(objective, optimizer)
    rank = accelerator.process_index
    run_dir.mkdir(parents=True, exist_ok=True)
    log = MetricLog(run_dir, enabled=accelerator.is_main_process)
    steps = loop.steps
    end = steps if stop_after is None else min(steps, stop_after)
    info = {**(info or {}), "run_config": run_config}
    losses: list[float] = []
    bar = tqdm(range(start, end), initial=start, total=steps, desc=role, unit="step",
               disable=not accelerator.is_main_process, file=sys.stderr)
    t0 = time.time()
    done = start
    for step in bar:
        lr = loop.lr * min(1.0, (step + 1) / loop.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        with accelerator.autocast():
            loss, logs = step_fn(objective, step, rank, device)
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(params, loop.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model, step)
        losses.append(loss.item())
        done = step + 1
        if done % loop.log_every == 0 or done == end:
            log.write({"step": done, "loss": loss.item(), "grad_norm": float(grad_norm), "lr": lr,
                       "seconds": round(time.time() - t0, 1), **logs})
            bar.set_postfix(loss=f"{loss.item():.4f}")
        # every rank reads rank 0's clock, so all of them stop at the same step
        out_of_time = time_limit is not None and done < end and _broadcast_flag(
            accelerator, time.time() - t0 >= time_limit)
        if done % loop.checkpoint_every == 0 or done == end or out_of_time:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                save_training_state(step_dir(run_dir, done), model=model, ema=ema, optimizer=optimizer,
                                    step=done, extra={"run_config": run_config})
                _prune(run_dir, loop.keep_checkpoints)
                save_model(ema.model, run_dir / f"{role}-latest", role=role, info={**info, "step": done})
        if validate is not None and validate_every and done % validate_every == 0 and accelerator.is_main_process:
            log.write({"step": done, **validate(ema.model, done)}, kind="val")
        if out_of_time:
            accelerator.print(f"time limit of {time_limit:g} s reached at step {done}; checkpoint saved, "
                              f"run the command again to resume")
            break
    if done == steps and accelerator.is_main_process:
        save_model(ema.model, run_dir / role, role=role, info={**info, "step": end})
    log.close()
    return losses


def _broadcast_flag(accelerator: Any, flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank."""
    if accelerator.num_processes == 1:
        return flag
    from accelerate.utils import broadcast

    value = torch.tensor([float(flag)], device=accelerator.device)
    return bool(broadcast(value, from_process=0).item())


def _with_defaults(saved: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``saved`` with the keys it lacks (at any depth) taken from ``defaults``."""
    out = dict(saved)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _with_defaults(out[key], value)
    return out


def _normalized(config: dict[str, Any]) -> dict[str, Any]:
    """A saved run config in today's spelling: ``loop.mixed_precision`` "no" (runs before
    :class:`fada_rt.precision.Precision`) is "fp32"."""
    loop = config.get("loop")
    if not (isinstance(loop, dict) and "mixed_precision" in loop):
        return config
    return {**config, "loop": {**loop, "mixed_precision": Precision.parse(loop["mixed_precision"]).value}}


def _without_steps(config: dict[str, Any]) -> dict[str, Any]:
    out = dict(config)
    loop = dict(out.get("loop", {}))
    loop.pop("steps", None)
    out["loop"] = loop
    return out


def _prune(run_dir: Path, keep: int) -> None:
    done = sorted(p for p in (run_dir / "checkpoints").glob("step_*") if not p.name.endswith(".tmp"))
    for old in done[:-keep]:
        shutil.rmtree(old)


def command_line(module: str, argv: list[str] | None) -> str:
    return f"python -m {module} " + " ".join(argv if argv is not None else sys.argv[1:])


class MetricLog:
    """One CSV per kind of row (``metrics.csv`` for training, ``val.csv`` for validation; the header is
    the first row's keys) plus TensorBoard scalars under ``RUN/tensorboard``."""

    def __init__(self, run_dir: Path, *, enabled: bool = True) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self.tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, row: dict[str, Any], *, kind: str = "metrics") -> None:
        if not self.enabled:
            return
        path = self.run_dir / f"{kind}.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row), extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)):
                self.tb.add_scalar(f"{kind}/{k}", v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
