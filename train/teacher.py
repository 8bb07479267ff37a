"""Teacher training: epsilon prediction (paper Eq. 1) of ReferenceNet + denoiser + AudioProj.

``python -m train.teacher --data DIR --cache DIR --vae DIR --run runs/teacher-tiny`` (tiny), or
``accelerate launch -m train.teacher --preset sd15 --init-sd15 DIR --wav2vec2 DIR ...`` on many GPUs —
one code path (:mod:`train.loop`): accelerate handles DDP and mixed precision.

Per sample: a chunk from the cache (train/data.py), ``t ~ U{0..999}``, ``z_t = sqrt(abar) x0 +
sqrt(1-abar) eps``; condition dropout trains the three CFG branches of Eq. 9: with probability
``p_drop_both`` neither reference nor audio ("b"), with ``p_drop_audio`` the audio only ("r"),
otherwise both ("a"). Checkpoints are exact to resume (all randomness is a function of
(seed, step, rank)); metrics go to ``metrics.csv`` and TensorBoard; the EMA teacher is exported as a
fada-rt checkpoint at the end (``RUN/teacher``) and at every checkpoint (``RUN/teacher-latest``).

The loss is always Eq. 1's eps MSE; what the UNet itself outputs is the model's ``prediction``
(eps for sd15, v for tiny: ``DenoisingUNet`` converts v to eps), and ``--prediction`` turns an eps
checkpoint into a v one to fine-tune. With ``truncated_snr`` weighting a v network's loss is within a
factor 2 of its v MSE at every t (weight x abar = max(abar, 1 - abar), in [1/2, 1]).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from fada_rt.config import PREDICTIONS
from fada_rt.models.fada import FadaModel
from fada_rt.sampling import SD15_SCHEDULE
from train.cli import HelpFormatter, add_dataclass_options, config_dict, dataclass_from_args
from train.data import ChunkBatch, ChunkSampler, draw_shared_noise, trained_rollout
from train.loop import RunOptions, TrainConfig, command_line, run_training, step_seed
from train.sync_expert import SyncExpert, load_sync_expert
from train.weighting import fixed_motion_map, pixel_weights

LossWeighting = Literal["uniform", "truncated_snr"]
SyncTarget = Literal["audio", "video", "audio-hinge"]
LOSS_WEIGHTINGS: tuple[str, ...] = get_args(LossWeighting)
SYNC_TARGETS: tuple[str, ...] = get_args(SyncTarget)


@dataclass(frozen=True)
class TeacherTrainConfig(TrainConfig):
    """Teacher training (Eq. 1): the options both trainers share (train.loop.TrainConfig) and the teacher's
    loss: its timestep weight, the audio path's learning rate and the lip-sync expert's term."""

    #: per-timestep weight of Eq. 1: "uniform" (the paper; SD1.5-initialised teachers) or "truncated_snr",
    #: max(1, 1/SNR(t)): x0 accuracy at high noise (teachers trained from scratch)
    loss_weighting: LossWeighting = "uniform"
    #: learning rate of the audio path (AudioProj, the denoiser's audio attention) as a multiple of the
    #: learning rate: audio-driven detail (mouth width) learns slowest; 1: one rate
    audio_lr_scale: float = 1.0
    #: lip-sync expert folder (python -m train.sync_expert) for the sync loss on the x0 prediction
    sync_expert: str | None = None
    #: weight of the sync loss, sync_weight * (1 - expert cosine); needs a sync_expert
    sync_weight: float = 0.0
    #: what the x0 prediction's expert video embedding is pulled to: "audio" (its audio's embedding: SyncNet
    #: supervision), "video" (the ground truth's video embedding: feature matching) or "audio-hinge" (its
    #: audio's, only up to the ground truth's cosine: no reward for over-moving mouths)
    sync_target: SyncTarget = "audio"
    #: the sync loss applies to samples with t <= this (0..999; x0 = (z_t - sqrt(1-abar) eps) / sqrt(abar) is
    #: sharp enough)
    sync_max_t: int = 500

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.audio_lr_scale > 0:
            raise ValueError(f"audio_lr_scale must be > 0, got {self.audio_lr_scale}")
        check_sync_options(weight=self.sync_weight, has_expert=self.sync_expert is not None, target=self.sync_target)
        if not 0 <= self.sync_max_t < SD15_SCHEDULE.num_train_timesteps:
            raise ValueError(f"sync_max_t must be in [0, {SD15_SCHEDULE.num_train_timesteps - 1}], got {self.sync_max_t}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {self.loss_weighting!r}")


def check_sync_options(*, weight: float, has_expert: bool, target: str) -> None:
    """The sync-loss options both the training config and :class:`TeacherObjective` accept."""
    if weight < 0 or (weight > 0) != has_expert:
        raise ValueError(f"sync_weight {weight} needs a sync_expert and a sync_expert needs sync_weight > 0 "
                         f"(expert given: {has_expert}); train one with python -m train.sync_expert")
    if target not in SYNC_TARGETS:
        raise ValueError(f"sync_target must be one of {SYNC_TARGETS}, got {target!r}")


def timestep_weights(abar: Tensor, kind: str) -> Tensor:
    """lambda(t) of ``lambda(t) ||eps - eps_theta(z_t)||^2`` per training index.

    "truncated_snr" (Salimans & Ho 2022) is ``max(1, 1/SNR) = max(1, (1 - abar) / abar)``: the plain
    eps loss where SNR >= 1 and the x0 loss ``||x0 - x0_theta||^2`` (= eps loss / SNR) at high noise.
    A teacher trained from scratch (small presets) otherwise learns x0 at high noise very slowly:
    uniformly weighted, the tiny teacher still could not recover the frame from z_t at t = 0.9 after
    3000 steps (x0 MSE 0.31, copying the reference gives 0.009), and its DDIM samples were noise.
    SD1.5-initialised teachers (sd15) have learnt this already; "uniform" is the paper's Eq. 1.
    """
    if kind == "uniform":
        return torch.ones_like(abar)
    if kind == "truncated_snr":
        return ((1.0 - abar) / abar).clamp(min=1.0)
    raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {kind!r}")


class TeacherObjective(nn.Module):
    """Per-sample Eq. 1 loss of a batch; the module DDP wraps (it owns the trainable networks).

    With a lip-sync expert (:class:`train.sync_expert.SyncExpert`, frozen) and ``sync_weight`` > 0, each
    sample with audio kept and ``t <= sync_max_t`` adds ``sync_weight * mean_k (1 - cos_k)``: the expert's
    cosine between the x0 prediction's frame windows and, for ``sync_target="audio"``, their audio
    (LatentSync's SyncNet supervision, in latent space), or for ``"video"`` the ground truth's windows
    (feature matching in the expert's space: the mouth as the expert sees it, whose optimum is the truth).
    ``"audio-hinge"`` adds ``sync_weight * mean_k max(0, cos_k(truth) - cos_k(prediction))``, both against
    the audio: only windows less in sync than the ground truth's are pulled, and no further than its cosine
    (no reward for out-scoring real speech).
    ``sync_cosine`` holds the last batch's mean cosine (nan when no sample had the term).
    ``motion_map``: a fixed per-pixel weight (:func:`train.weighting.dataset_motion_map`) instead of each
    chunk's own motion weight.
    """

    def __init__(self, model: FadaModel, loss_weighting: str = "uniform", motion_weight: float = 0.0,
                 sync_expert: SyncExpert | None = None, sync_weight: float = 0.0, sync_max_t: int = 500,
                 sync_target: str = "audio", motion_map: Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        self.motion_weight = motion_weight
        self.register_buffer("motion_map", motion_map, persistent=False)  # None: each chunk's own map
        check_sync_options(weight=sync_weight, has_expert=sync_expert is not None, target=sync_target)
        self.sync_expert = sync_expert
        self.sync_weight, self.sync_max_t, self.sync_target = sync_weight, sync_max_t, sync_target
        self.sync_cosine = float("nan")
        abar = SD15_SCHEDULE.alphas_cumprod.float()
        self.register_buffer("abar", abar, persistent=False)
        self.register_buffer("weight", timestep_weights(abar, loss_weighting), persistent=False)

    def forward(self, batch: ChunkBatch, eps: Tensor, timestep: Tensor, keep_audio: Tensor, keep_ref: Tensor) -> Tensor:
        m = self.model
        a = self.abar[timestep].view(-1, 1, 1, 1, 1)
        z_t = a.sqrt() * batch.x0 + (1 - a).sqrt() * eps  # (B, F, C, h, w)
        reference = m.reference(batch.reference)
        motion = m.motion_features(batch.motion)
        tokens = m.audio_proj(batch.audio) * keep_audio.view(-1, 1, 1, 1).to(batch.x0.dtype)  # (B, F, N, D)
        pred = m.denoiser(z_t, timestep.float(), tokens, reference.keys, reference.values, motion, ref_mask=keep_ref)
        err = (pred.float() - eps.float()).square() * pixel_weights(batch.x0, self.motion_weight, self.motion_map)
        loss = self.weight[timestep] * err.flatten(1).mean(1)  # (B,)
        if self.sync_expert is None:
            return loss
        use = keep_audio & (timestep <= self.sync_max_t)
        if not use.any():
            self.sync_cosine = float("nan")
            return loss
        x0 = (z_t[use] - (1 - a[use]).sqrt() * pred[use].float()) / a[use].sqrt()  # (B', F, C, h, w)
        if self.sync_target == "video":
            cos = self.sync_expert.chunk_video_cosines(x0, batch.x0[use])  # (B', K)
            term = 1.0 - cos.mean(1)  # (B',)
        else:
            audio = self.sync_expert.embed_chunk_audio(batch.audio[use])  # (B', K, E), once for both cosines
            cos = (self.sync_expert.embed_chunk_video(x0) * audio).sum(-1)  # (B', K)
            if self.sync_target == "audio":
                term = 1.0 - cos.mean(1)
            else:
                with torch.no_grad():
                    truth = (self.sync_expert.embed_chunk_video(batch.x0[use]) * audio).sum(-1)  # (B', K)
                term = (truth - cos).clamp(min=0.0).mean(1)
        self.sync_cosine = cos.mean().item()
        return loss.index_add(0, use.nonzero()[:, 0], self.sync_weight * term)


def draw_noise(batch: ChunkBatch, config: TeacherTrainConfig, *, step: int, rank: int
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """eps, timesteps, keep_audio, keep_ref of one step (deterministic in (seed, step, rank))."""
    gen = torch.Generator().manual_seed(step_seed(config.seed, step, rank, stream=1))
    b = batch.x0.shape[0]
    eps = torch.randn(batch.x0.shape, generator=gen)
    t = torch.randint(0, SD15_SCHEDULE.num_train_timesteps, (b,), generator=gen)
    u = torch.rand(b, generator=gen)
    keep_ref = u >= config.p_drop_both
    keep_audio = u >= config.p_drop_both + config.p_drop_audio
    return draw_shared_noise(eps, config.noise_sharing_max, gen), t, keep_audio, keep_ref


def fixed_eval_batch(sampler: ChunkSampler, *, batch_size: int = 8, seed: int = 1234):
    """A fixed batch + noise to measure learning with (same t and eps every time)."""
    batch = sampler.batch(step=2**40, batch_size=batch_size, rank=seed)  # a step no run reaches
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(batch.x0.shape, generator=gen)
    t = torch.linspace(50, 950, batch_size).long()
    ones = torch.ones(batch_size, dtype=torch.bool)
    return batch, eps, t, ones, ones


def train_teacher(
    *,
    model: FadaModel,
    sampler: ChunkSampler,
    config: TeacherTrainConfig,
    run_dir: str | Path,
    stop_after: int | None = None,
    time_limit: float | None = None,
    validate: Callable[[FadaModel, int], dict[str, float]] | None = None,
    validate_every: int = 0,
    info: dict[str, Any] | None = None,
) -> list[float]:
    """Train (resuming from the newest checkpoint in ``run_dir``); returns the losses of this call.

    ``stop_after``: return after that global step (tests, and runs split over sessions); ``time_limit``:
    after that many seconds (:func:`train.loop.run_training`).
    """
    expert = None if config.sync_expert is None else check_sync_expert(config.sync_expert, model)
    model.config = trained_rollout(model.config, motion_noise_steps=config.motion_noise_steps,
                                   noise_sharing_max=config.noise_sharing_max, reference_sink=config.reference_sink)
    fixed_map = fixed_motion_map(config.motion_map, sampler, config.motion_weight)
    objective = TeacherObjective(model.set_trainable(), config.loss_weighting, config.motion_weight,
                                 sync_expert=expert, sync_weight=config.sync_weight, sync_max_t=config.sync_max_t,
                                 sync_target=config.sync_target, motion_map=fixed_map)

    def step_fn(obj: nn.Module, step: int, rank: int, device: torch.device) -> tuple[Tensor, dict[str, float]]:
        batch = sampler.batch(step=step, batch_size=config.batch_size, rank=rank).to(device)
        eps, t, keep_audio, keep_ref = (x.to(device) for x in draw_noise(batch, config, step=step, rank=rank))
        per_sample = obj(batch, eps, t, keep_audio, keep_ref)
        branch = {"loss_a": per_sample[keep_audio], "loss_r": per_sample[keep_ref & ~keep_audio],
                  "loss_b": per_sample[~keep_ref]}
        logs = {k: (v.mean().item() if v.numel() else float("nan")) for k, v in branch.items()}
        if expert is not None:
            logs["sync_cosine"] = objective.sync_cosine
        return per_sample.mean(), logs

    return run_training(model=model, objective=objective, step_fn=step_fn, loop=config.loop,
                        run_config=config_dict(config), run_dir=run_dir, role="teacher",
                        run_config_defaults=config_dict(TeacherTrainConfig()),
                        lr_scale=lambda name: config.audio_lr_scale if model.is_audio_parameter(name) else 1.0,
                        stop_after=stop_after, time_limit=time_limit, validate=validate,
                        validate_every=validate_every, info=info)


def check_sync_expert(folder: str | Path, model: FadaModel) -> SyncExpert:
    """Load a lip-sync expert and check it reads this model's latents (same VAE) and audio features."""
    from train.cache import weights_digest

    expert, meta = load_sync_expert(folder)
    if meta.get("vae_sha256") != weights_digest(model.vae):
        raise ValueError(f"sync expert {folder} was trained on latents of another VAE; train one on this model's "
                         f"cache (python -m train.sync_expert --cache ...)")
    if meta.get("audio") != dataclasses.asdict(model.config.audio):
        raise ValueError(f"sync expert {folder} was trained on another audio front-end ({meta.get('audio')}); "
                         f"the model's is {dataclasses.asdict(model.config.audio)}")
    return expert


def build_teacher_model(*, preset: str, vae: str | None = None, init: str | None = None,
                        init_sd15: str | None = None, wav2vec2: str | None = None,
                        prediction: str | None = None) -> FadaModel:
    """The model a teacher run starts from: a fada-rt checkpoint (``init``), a local SD1.5 folder
    (``init_sd15``; sd15-shaped presets), or random init with a trained small VAE (``vae``).
    ``prediction`` overrides the parametrisation of the preset or checkpoint (None keeps it)."""
    model = _build_teacher_model(preset=preset, vae=vae, init=init, init_sd15=init_sd15, wav2vec2=wav2vec2)
    if prediction is not None and prediction != model.config.prediction:
        model.set_prediction(prediction)
    return model


def _build_teacher_model(*, preset: str, vae: str | None, init: str | None, init_sd15: str | None,
                         wav2vec2: str | None) -> FadaModel:
    from fada_rt.checkpoint import init_from_sd15, load_model, load_vae
    from fada_rt.config import get_preset

    if sum(x is not None for x in (vae, init, init_sd15)) != 1:
        raise ValueError("give exactly one of --vae (small presets), --init-sd15 (sd15) or --init (a checkpoint)")
    if init is not None:
        return load_model(init, preset=preset, role="teacher")[0].train()
    config = get_preset(preset)
    if init_sd15 is not None:
        return init_from_sd15(init_sd15, config, wav2vec2=wav2vec2).train()
    if config.audio.kind == "wav2vec2":
        raise ValueError(f"preset {preset} uses wav2vec2 features: start it with --init-sd15 and --wav2vec2")
    small_vae = load_vae(vae, expect=config.vae)
    return FadaModel(config.replace(vae=small_vae.config), vae=small_vae).train()


def build_parser() -> argparse.ArgumentParser:
    """``python -m train.teacher``'s options: the model a run starts from, then :class:`train.loop.RunOptions`
    and :class:`TeacherTrainConfig` (train/cli.py: one option per field)."""
    p = argparse.ArgumentParser(prog="python -m train.teacher", formatter_class=HelpFormatter,
                                description="Train the FADA teacher (paper Eq. 1) on cached clips.")
    start = p.add_argument_group("the model", "what the run starts from: give one of --vae, --init-sd15, --init")
    start.add_argument("--preset", default="tiny", help="model preset (fada_rt.config)")
    start.add_argument("--vae", default=None, help="trained small VAE (python -m train.vae), for small presets")
    start.add_argument("--init", default=None, help="a fada-rt teacher checkpoint to go on from")
    start.add_argument("--init-sd15", default=None, help="local SD1.5 diffusers folder (unet/, vae/)")
    start.add_argument("--wav2vec2", default=None, help="local transformers wav2vec2 folder (sd15 preset)")
    start.add_argument("--prediction", default=None, choices=PREDICTIONS,
                       help="what the UNet outputs: epsilon (SD1.5) or v (the tiny preset); None: the preset's, "
                            "or --init's; another one fine-tunes the checkpoint into it")
    p.add_argument("--manifest", default="A", help="training manifest: the teacher trains on the strict set A")
    add_dataclass_options(p, RunOptions)
    add_dataclass_options(p, TeacherTrainConfig, inline=("loop",))
    return p


def main(argv: list[str] | None = None) -> None:
    from fada_rt.clips import read_manifest
    from fada_rt.config import get_preset
    from train.cache import open_cache, weights_digest

    p = build_parser()
    args = p.parse_args(argv)
    try:
        run = dataclass_from_args(RunOptions, args)
        config = dataclass_from_args(TeacherTrainConfig, args)
    except ValueError as e:
        p.error(str(e))
    model = build_teacher_model(preset=args.preset, vae=args.vae, init=args.init, init_sd15=args.init_sd15,
                                wav2vec2=args.wav2vec2, prediction=args.prediction)
    cache = open_cache(run.cache, config=model.config, vae_digest=weights_digest(model.vae),
                       clip_ids=read_manifest(run.data, args.manifest))
    sampler = ChunkSampler(cache, config=model.config, seed=config.seed,
                           p_motion_from_reference=config.p_motion_from_reference,
                           motion_noise_steps=config.motion_noise_steps, reference_sink=config.reference_sink,
                           audio_augment=config.audio_augment)
    validate = None
    if run.validate_every:
        from train.validate import Validator

        validate = Validator(data=run.val_data, run_dir=run.run, num_clips=run.val_clips, sampler="teacher")
    info = {"command": command_line("train.teacher", argv),
            "train_clips": len(sampler), "preset": get_preset(args.preset).preset}
    losses = train_teacher(model=model, sampler=sampler, config=config, run_dir=run.run, stop_after=run.stop_after,
                           time_limit=run.time_limit, validate=validate, validate_every=run.validate_every,
                           info=info)
    if losses:
        print(f"steps run: {len(losses)}; mean loss of the last 100: {sum(losses[-100:]) / len(losses[-100:]):.4f}")


if __name__ == "__main__":
    main()
