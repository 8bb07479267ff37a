"""Train the small AutoencoderKL of small presets on clip frames (docs/design.md §2, "VAE").

``python -m train.vae --data DIR --preset tiny --out fada_rt/assets/vae-tiny --steps 3000``

Loss: L1 + ``mse_weight`` MSE on pixels + ``kl_weight`` KL of the posterior (SD's VAE recipe without
its perceptual/adversarial terms, which need pretrained networks). After training the latent scaling
factor is measured as ``1 / std`` of the posterior means over held-out frames (SD1.5's 0.18215 was
found the same way), so the diffusion models see unit-variance latents. Prints and logs the held-out
reconstruction PSNR.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fada_rt.checkpoint import save_vae
from fada_rt.clips import list_clips, read_clip
from fada_rt.config import get_preset
from fada_rt.models.vae import VAE
from train.cache import frames_to_tensor, resize_frames


@dataclass(frozen=True)
class VAETrainConfig:
    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    kl_weight: float = 1e-6
    mse_weight: float = 1.0
    frames_per_clip: int = 12
    max_clips: int = 800
    val_frames: int = 256
    seed: int = 0


def load_frames(data: str | Path, *, resolution: int, frames_per_clip: int, max_clips: int, seed: int,
                manifest: str | None = None) -> np.ndarray:
    """uint8 (N, H, W, 3) frames sampled evenly from up to ``max_clips`` clips."""
    paths = list_clips(data, manifest=manifest)
    rng = np.random.default_rng(seed)
    if len(paths) > max_clips:
        paths = [paths[i] for i in sorted(rng.choice(len(paths), max_clips, replace=False))]
    out = []
    for path in tqdm(paths, desc="reading frames", unit="clip"):
        frames = read_clip(path).frames
        idx = np.linspace(0, len(frames) - 1, min(frames_per_clip, len(frames))).round().astype(int)
        sel = resize_frames(frames_to_tensor(frames[idx]), resolution)
        out.append(((sel + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    if not out:
        raise ValueError(f"no frames found in {data}")
    return np.concatenate(out)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1]."""
    mse = ((a - b) / 2).square().mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def train_vae(*, frames: np.ndarray, preset: str, config: VAETrainConfig, out: str | Path,
              log: str | Path | None = None) -> dict[str, float]:
    """Train, measure the scaling factor, save to ``out``; returns {psnr, scaling_factor, ...}."""
    torch.manual_seed(config.seed)  # parameter init of the new VAE
    model_config = get_preset(preset)
    vae = VAE(dataclasses.replace(model_config.vae, scaling_factor=1.0)).train()
    gen = torch.Generator().manual_seed(config.seed)
    perm = torch.randperm(len(frames), generator=gen).numpy()
    n_val = min(config.val_frames, len(frames) // 5)
    val = frames_to_tensor(frames[perm[:n_val]])
    train = frames[perm[n_val:]]
    opt = torch.optim.AdamW(vae.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(s, config.steps) / config.steps)))
    writer = csv.writer(open(log, "w", newline="")) if log else None  # noqa: SIM115 (closed at the end)
    if writer:
        writer.writerow(["step", "loss", "l1", "kl", "lr", "seconds"])
    start = time.time()
    bar = tqdm(range(config.steps), desc="train vae", unit="step")
    for step in bar:
        idx = torch.randint(len(train), (config.batch_size,), generator=gen).numpy()
        x = frames_to_tensor(train[idx])
        if torch.rand((), generator=gen) < 0.5:
            x = x.flip(-1)  # portraits are roughly symmetric: horizontal flips double the data
        dist = vae.model.encode(x).latent_dist
        z = dist.sample(gen)
        recon = vae.model.decode(z).sample
        l1 = (recon - x).abs().mean()
        mse = (recon - x).square().mean()
        kl = dist.kl().mean() / x[0].numel()
        loss = l1 + config.mse_weight * mse + config.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == config.steps - 1:
            bar.set_postfix(l1=f"{l1.item():.4f}", kl=f"{kl.item():.2f}")
            if writer:
                writer.writerow([step, loss.item(), l1.item(), kl.item(), sched.get_last_lr()[0],
                                 round(time.time() - start, 1)])
    vae.eval()
    with torch.no_grad():
        means = torch.cat([vae.model.encode(val[i : i + 64]).latent_dist.mean for i in range(0, n_val, 64)])
        recon = torch.cat([vae.model.decode(means[i : i + 64]).sample for i in range(0, n_val, 64)]).clamp(-1, 1)
    scaling = 1.0 / means.std().item()
    result = {"psnr_db": psnr(recon, val), "scaling_factor": scaling, "latent_std": means.std().item(),
              "val_frames": n_val, "train_frames": len(train), "seconds": round(time.time() - start, 1)}
    final = VAE(dataclasses.replace(vae.config, scaling_factor=scaling), vae.model)
    save_vae(final, out, info={**result, "train_config": dataclasses.asdict(config)})
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train the small AutoencoderKL of a small preset on clip frames.")
    p.add_argument("--data", required=True, help="dataset folder in the clip format")
    p.add_argument("--out", required=True, help="output VAE checkpoint folder (config.json + vae.safetensors)")
    p.add_argument("--preset", default="tiny", help="model preset whose VAE shape to train")
    p.add_argument("--manifest", default=None, help="read only the clips of this manifest (default: all)")
    p.add_argument("--steps", type=int, default=VAETrainConfig.steps, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=VAETrainConfig.batch_size, help="frames per step")
    p.add_argument("--lr", type=float, default=VAETrainConfig.lr, help="peak learning rate (cosine decay)")
    p.add_argument("--max-clips", type=int, default=VAETrainConfig.max_clips, help="clips to read frames from")
    p.add_argument("--frames-per-clip", type=int, default=VAETrainConfig.frames_per_clip,
                   help="frames sampled per clip")
    p.add_argument("--seed", type=int, default=0, help="seed of init, data order and noise")
    p.add_argument("--log", default=None, help="CSV file for the loss log")
    args = p.parse_args(argv)
    config = VAETrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, max_clips=args.max_clips,
                            frames_per_clip=args.frames_per_clip, seed=args.seed)
    res = get_preset(args.preset).resolution
    frames = load_frames(args.data, resolution=res, frames_per_clip=config.frames_per_clip,
                         max_clips=config.max_clips, seed=config.seed, manifest=args.manifest)
    result = train_vae(frames=frames, preset=args.preset, config=config, out=args.out, log=args.log)
    print(f"VAE saved to {args.out}: held-out PSNR {result['psnr_db']:.2f} dB, "
          f"scaling factor {result['scaling_factor']:.4f} ({result['val_frames']} held-out frames)")


if __name__ == "__main__":
    main()
