"""Distil a tiny VAE decoder (TAESD's shape) from a preset's VAE decoder (issue 27, docs/design.md §2).

``python -m train.tiny_decoder --checkpoint fada_rt/assets/tiny-fast --cache RUNS/cache-mixed --run RUNS/tiny-decoder``

The inputs are the cached latents of the training clips (scaled posterior means, what the diffusion models were
trained to produce). The targets are the VAE's own decoded frames of those latents (decoded once, kept in fp16),
not the clips' pixels, so the tiny decoder learns the VAE's decoder and nothing else. Loss: L1 + MSE on pixels;
no perceptual or adversarial term (they would need pretrained networks and were not measured to help). Held-out clips give the PSNR of the
tiny decoder against the VAE decoder, logged per ``log_every`` steps. Writes ``RUN/decoder`` (``config.json`` +
``decoder.safetensors``, :func:`fada_rt.checkpoint.save_tiny_decoder`) and ``RUN/metrics.csv``.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from fada_rt.checkpoint import save_tiny_decoder
from fada_rt.models.tiny_decoder import TinyDecoder, TinyDecoderConfig
from fada_rt.models.vae import VAE
from train.cli import HelpFormatter, add_dataclass_options, config_dict, dataclass_from_args


@dataclass(frozen=True)
class TinyDecoderTrainConfig:
    #: optimizer steps
    steps: int = 1500
    #: latents per step
    batch_size: int = 32
    #: peak learning rate (AdamW, linear warm-up over the first 5 %, then cosine to 0)
    lr: float = 1e-3
    #: weight of the L1 pixel loss
    l1_weight: float = 1.0
    #: weight of the MSE pixel loss
    mse_weight: float = 1.0
    #: weight of the detail loss: L1 between the band-pass responses (image minus its 3x3 binomial blur) of the
    #: made and the VAE's frames at full and half size; pixel losses alone blur fine texture
    detail_weight: float = 0.0
    #: decoder width (0: the preset's, TinyDecoderConfig.for_model)
    channels: int = 0
    #: residual blocks per upsampling stage (0: the preset's)
    blocks: int = 0
    #: clips whose latents are drawn from (the cache's first ones; 0: all)
    max_clips: int = 1200
    #: latents taken per clip, evenly spaced
    frames_per_clip: int = 12
    #: clips held out for the PSNR (the cache's last ones)
    val_clips: int = 32
    #: steps between rows of metrics.csv
    log_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "frames_per_clip", "val_clips", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.l1_weight >= 0 and self.mse_weight >= 0 and self.l1_weight + self.mse_weight > 0):
            raise ValueError("need lr > 0 and non-negative loss weights, not both 0")
        if self.detail_weight < 0 or self.channels < 0 or self.blocks < 0:
            raise ValueError("detail_weight, channels and blocks must be >= 0 (0 channels/blocks: the preset's)")

    def decoder_config(self, preset: TinyDecoderConfig) -> TinyDecoderConfig:
        """The preset's decoder shape with this run's ``channels`` / ``blocks`` where they are set."""
        return replace(preset, channels=self.channels or preset.channels, blocks=self.blocks or preset.blocks)


def latent_pool(cache: dict[str, dict[str, Tensor]], *, clips: list[str], frames_per_clip: int) -> Tensor:
    """(N, C, h, w) float32 latents, ``frames_per_clip`` evenly spaced from each clip."""
    out = []
    for cid in clips:
        lat = cache[cid]["latents"]
        idx = torch.linspace(0, lat.shape[0] - 1, min(frames_per_clip, lat.shape[0])).round().long()
        out.append(lat[idx].float())
    return torch.cat(out)


def band_pass(images: Tensor) -> Tensor:
    """``images`` minus their 3x3 binomial blur (reflect-padded), per channel: the fine detail a blur removes."""
    kernel = torch.tensor([1.0, 2.0, 1.0], device=images.device, dtype=images.dtype)
    kernel = (kernel[:, None] * kernel[None, :] / 16.0).expand(images.shape[1], 1, 3, 3)
    return images - F.conv2d(F.pad(images, (1, 1, 1, 1), mode="reflect"), kernel, groups=images.shape[1])


def detail_loss(made: Tensor, target: Tensor) -> Tensor:
    """Mean L1 between the band-pass responses of ``made`` and ``target`` at full and half size (N, 3, H, W)."""
    loss = (band_pass(made) - band_pass(target)).abs().mean()
    half = F.avg_pool2d(made, 2), F.avg_pool2d(target, 2)
    return 0.5 * (loss + (band_pass(half[0]) - band_pass(half[1])).abs().mean())


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB between images in [-1, 1] (peak-to-peak 2)."""
    mse = float((a.float() - b.float()).square().mean())
    return 10.0 * math.log10(4.0 / max(mse, 1e-12))


@torch.no_grad()
def decode_all(vae: VAE, latents: Tensor, *, batch: int = 256) -> Tensor:
    """The VAE's frames of every latent, fp16 (N, 3, H, W)."""
    parts = [vae.decode(latents[i : i + batch]).half()
             for i in tqdm(range(0, latents.shape[0], batch), desc="VAE targets", unit="batch")]
    return torch.cat(parts)


@torch.no_grad()
def held_out_psnr(decoder: TinyDecoder, vae: VAE, latents: Tensor, *, batch: int = 256) -> float:
    was = decoder.training
    decoder.eval()
    made, target = [], []
    for i in range(0, latents.shape[0], batch):
        made.append(decoder.decode(latents[i : i + batch]))
        target.append(vae.decode(latents[i : i + batch]))
    decoder.train(was)
    return psnr(torch.cat(made), torch.cat(target))


def train_tiny_decoder(*, vae: VAE, decoder_config: TinyDecoderConfig, cache: dict[str, dict[str, Tensor]],
                       run_dir: str | Path, config: TinyDecoderTrainConfig,
                       info: dict[str, Any] | None = None) -> dict[str, float]:
    """Train a :class:`TinyDecoder` on ``vae``'s decoded frames of the cached latents; returns the held-out PSNR
    before and after (dB against the VAE decoder) and the seconds spent."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ids = sorted(cache)
    if len(ids) <= config.val_clips:
        raise ValueError(f"the cache has {len(ids)} clips; need more than val_clips={config.val_clips}")
    train_ids = ids[: len(ids) - config.val_clips][: config.max_clips or None]
    train = latent_pool(cache, clips=train_ids, frames_per_clip=config.frames_per_clip)  # (N, C, h, w)
    val = latent_pool(cache, clips=ids[len(ids) - config.val_clips :], frames_per_clip=4)
    vae = vae.eval().requires_grad_(False)
    targets = decode_all(vae, train)  # (N, 3, H, W) fp16: the VAE decodes each latent once, not once per step
    gen = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        decoder = TinyDecoder(decoder_config).train()
    opt = torch.optim.AdamW(decoder.parameters(), lr=config.lr, weight_decay=0.0)
    warm = max(1, config.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (
        1.0 + math.cos(math.pi * min(1.0, s / config.steps))))
    before = held_out_psnr(decoder, vae, val)
    start = time.perf_counter()
    log_path = run_dir / "metrics.csv"
    with log_path.open("w", newline="") as f, tqdm(range(config.steps), desc="tiny decoder", unit="step") as bar:
        log = csv.writer(f)
        log.writerow(["step", "loss", "l1", "mse", "detail", "lr", "val_psnr_db", "seconds"])
        for step in bar:
            idx = torch.randint(0, train.shape[0], (config.batch_size,), generator=gen)
            latents, target = train[idx], targets[idx].float()  # (B, C, h, w), (B, 3, H, W) the VAE's frames
            made = decoder(latents)
            l1 = (made - target).abs().mean()
            mse = (made - target).square().mean()
            detail = detail_loss(made, target)
            loss = config.l1_weight * l1 + config.mse_weight * mse + config.detail_weight * detail
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
                log.writerow([step + 1, f"{loss.item():.6f}", f"{l1.item():.6f}", f"{mse.item():.6f}", f"{detail.item():.6f}",
                              f"{sched.get_last_lr()[0]:.3g}", f"{held_out_psnr(decoder, vae, val):.3f}",
                              f"{time.perf_counter() - start:.1f}"])
                f.flush()
    after = held_out_psnr(decoder, vae, val)
    result = {"val_psnr_db_before": before, "val_psnr_db": after, "seconds": time.perf_counter() - start,
              "train_latents": int(train.shape[0]), "val_latents": int(val.shape[0])}
    save_tiny_decoder(decoder.eval(), run_dir / "decoder", vae=vae.config,
                      info={**(info or {}), **result, "train_config": config_dict(config)})
    return result


def main(argv: list[str] | None = None) -> None:
    from fada_rt.checkpoint import load_model
    from train.cache import open_cache, weights_digest
    from train.loop import command_line

    p = argparse.ArgumentParser(prog="python -m train.tiny_decoder", formatter_class=HelpFormatter,
                                description="Distil a tiny VAE decoder (TAESD's shape) from a model's VAE decoder.")
    p.add_argument("--checkpoint", required=True, help="a fada-rt model checkpoint: its VAE is the one distilled")
    p.add_argument("--cache", required=True, help="latent cache of that VAE (python -m train.cache)")
    p.add_argument("--run", required=True, help="run folder: metrics.csv and decoder/")
    add_dataclass_options(p, TinyDecoderTrainConfig)
    args = p.parse_args(argv)
    try:
        config = dataclass_from_args(TinyDecoderTrainConfig, args)
    except ValueError as err:
        p.error(str(err))
    model, _ = load_model(args.checkpoint)
    cache = open_cache(args.cache, config=model.config, vae_digest=weights_digest(model.vae))
    result = train_tiny_decoder(vae=model.vae, decoder_config=config.decoder_config(TinyDecoderConfig.for_model(model.config)),
                                cache=cache,
                                run_dir=args.run, config=config,
                                info={"command": command_line("train.tiny_decoder", argv),
                                      "checkpoint": str(args.checkpoint)})
    print(f"held-out PSNR against the VAE decoder: {result['val_psnr_db_before']:.2f} -> {result['val_psnr_db']:.2f} dB "
          f"({result['seconds']:.0f} s); wrote {Path(args.run) / 'decoder'}")


if __name__ == "__main__":
    main()
