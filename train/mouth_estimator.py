"""Train the metrics' mouth-state estimator: python -m train.mouth_estimator

Clips (1-1.6 s each: many identities rather than long clips) come from the synthetic world
(tier B mix, so degraded, frozen and expressive frames are seen too; a quarter rendered at
128 px and area-resized to 64), generated in memory from ``--seed`` (kept apart from the seeds datasets use
by default), or read from a dataset folder with labels (``--data``). A tenth of the clips is
held out and the validation errors are printed and stored in ``weights/config.json``'s
neighbour ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fada_rt.clips import clip_id_of, list_clips, read_clip, read_labels
from fada_rt.metrics.mouth import (
    STATE_NAMES,
    STATE_SCALE,
    WEIGHTS_DIR,
    AudioMouthNet,
    FaceStateNet,
    MouthConfig,
    MouthEstimator,
    audio_windows,
    frames_to_input,
)
from train.synthetic.dataset import make_clip

AUDIO_KINDS = ("clean", "expressive", "degraded")  # kinds whose mouth follows their audio


def load_examples(*, data: str | None, clips: int, seed: int, sizes: tuple[int, ...],
                  speech: tuple[str, ...] = ("synth",)) -> list[dict]:
    """Per clip: frames (T, 64, 64, 3) uint8, states (T, 7), audio windows and kind; generated clip i speaks with
    ``speech[i % len(speech)]`` (the world's speech options: synth, tts, engine names)."""
    cfg = MouthConfig()
    out = []
    if data is not None:
        items = ((read_clip(p), read_labels(data, clip_id_of(p))) for p in list_clips(data)[:clips])
    else:
        made = (make_clip(seed=seed, index=i, size=sizes[i % len(sizes)], tier="B", min_seconds=1.0, max_seconds=1.6,
                          speech=speech[i % len(speech)]) for i in range(clips))
        items = ((c, c.labels) for c in made)
    for clip, labels in tqdm(items, total=clips, desc="clips", unit="clip"):
        x = frames_to_input(clip.frames, cfg.image_size)
        frames = ((x.permute(0, 2, 3, 1) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        states = np.stack([np.asarray(labels["frames"][n], np.float32) / s for n, s in zip(STATE_NAMES, STATE_SCALE)], 1)
        out.append(
            {
                "frames": frames,
                "states": torch.from_numpy(states),
                "mel": audio_windows(clip.audio, num_frames=frames.shape[0], cfg=cfg),
                "kind": labels["kind"],
            }
        )
    return out


def train(*, examples: list[dict], steps: int, batch: int, lr: float, seed: int) -> tuple[MouthEstimator, dict]:
    cfg = MouthConfig()
    gen = torch.Generator().manual_seed(seed)
    torch_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    with torch.random.fork_rng():
        torch.manual_seed(torch_seed)  # parameter init only; data order uses ``gen``
        face, audio = FaceStateNet(cfg), AudioMouthNet(cfg)
    n_val = max(1, len(examples) // 10)
    val, tr = examples[:n_val], examples[n_val:]
    frames = torch.cat([e["frames"] for e in tr])
    states = torch.cat([e["states"] for e in tr])
    amask = [e["kind"] in AUDIO_KINDS for e in tr]
    mel = torch.cat([e["mel"] for e, m in zip(tr, amask) if m])
    mouth = torch.cat([e["states"][:, :2] for e, m in zip(tr, amask) if m])
    audio.mel_mean.copy_(mel[:, cfg.context].mean(0))
    audio.mel_std.copy_(mel[:, cfg.context].std(0) + 1e-3)
    params = list(face.parameters()) + list(audio.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    weights = torch.tensor([3.0, 2.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    bar = tqdm(range(steps), desc="train mouth estimator", unit="step")
    for step in bar:
        i = torch.randint(0, frames.shape[0], (batch,), generator=gen)
        x = frames[i].permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B, 3, 64, 64)
        x = x * (1 + 0.2 * (torch.rand(batch, 1, 1, 1, generator=gen) - 0.5)) + 0.1 * (torch.rand(batch, 3, 1, 1, generator=gen) - 0.5)
        loss_face = ((face(x) - states[i]) ** 2 * weights).mean()
        j = torch.randint(0, mel.shape[0], (batch,), generator=gen)
        gain = 2 * math.log(10) / 20 * 6 * (2 * torch.rand(batch, 1, 1, generator=gen) - 1)  # +-6 dB in log power
        loss_audio = ((audio(mel[j] + gain) - mouth[j]) ** 2).mean()
        opt.zero_grad()
        (loss_face + loss_audio).backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(face=f"{loss_face.item():.4f}", audio=f"{loss_audio.item():.4f}")
    est = MouthEstimator(cfg, face, audio)
    return est, validate(est, val)


@torch.no_grad()
def validate(est: MouthEstimator, val: list[dict]) -> dict:
    """Mean absolute errors (generator units) on held-out clips; audio metrics on audio kinds."""
    errs = {n: [] for n in STATE_NAMES}
    a_err, a_pred, a_true = [], [], []
    for e in val:
        pred = est.face(e["frames"].permute(0, 3, 1, 2).float() / 127.5 - 1.0)
        for j, n in enumerate(STATE_NAMES):
            errs[n].append(((pred[:, j] - e["states"][:, j]).abs() * STATE_SCALE[j]).numpy())
        if e["kind"] in AUDIO_KINDS:
            p = est.audio(e["mel"])[:, 0].numpy()
            a_pred.append(p)
            a_true.append(e["states"][:, 0].numpy())
            a_err.append(np.abs(p - a_true[-1]))
    out = {f"mae_{n}": float(np.concatenate(v).mean()) for n, v in errs.items()}
    out["mae_audio_open"] = float(np.concatenate(a_err).mean()) if a_err else float("nan")
    if a_pred:
        out["corr_audio_open"] = float(np.corrcoef(np.concatenate(a_pred), np.concatenate(a_true))[0, 1])
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.mouth_estimator", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(WEIGHTS_DIR), help="folder for mouth.safetensors, config.json, metrics.json")
    p.add_argument("--data", default=None, help="a synthetic dataset folder with labels/ (default: generate clips in memory)")
    p.add_argument("--clips", type=int, default=900, help="number of clips to train and validate on")
    p.add_argument("--seed", type=int, default=90210, help="seed of the generated clips, the init and the batches")
    p.add_argument("--steps", type=int, default=3000, help="optimisation steps")
    p.add_argument("--batch", type=int, default=64, help="frames (and audio windows) per step")
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate (cosine decay)")
    p.add_argument("--speech", nargs="+", default=["synth"],
                   help="the generated clips' speech, taken in turn (python -m train.synthetic --help; the shipped "
                        "estimator: synth tts; never flite, the held-out engine) (default: %(default)s)")
    a = p.parse_args(argv)
    examples = load_examples(data=a.data, clips=a.clips, seed=a.seed, sizes=(64, 64, 64, 128), speech=tuple(a.speech))
    est, metrics = train(examples=examples, steps=a.steps, batch=a.batch, lr=a.lr, seed=a.seed)
    est.save(a.out)
    metrics |= {"clips": a.clips, "seed": a.seed, "steps": a.steps, "data": a.data or "generated", "speech": a.speech}
    (Path(a.out) / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    print(json.dumps(metrics, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
