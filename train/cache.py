"""Cache of VAE latents and audio features, so training never decodes video again.

``python -m train.cache --data DIR --vae CKPT --preset tiny --out DIR`` writes one
``<clip_id>.safetensors`` per clip with ``latents`` (T, C, h, w) — the scaled posterior mean —
and ``audio`` (T, L, D) — the audio front-end's un-windowed features — both fp16, plus
``index.json`` naming the VAE (sha256 of its weights), the audio config and every clip's frame
count. :func:`open_cache` refuses a cache built with another VAE or audio front-end.

``--audio-variants K`` adds ``audio_aug`` (K, T, L, D): the features of K augmented copies of the clip's
audio (:func:`train.audio_augment.augment_audio`: microphone and call conditions), seeded by the clip id,
which training draws with ``--audio-augment P``. ``--merge`` joins worlds (data folders and their caches)
with distinct clip ids into one training set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from fada_rt.clips import clip_id_of, list_clips, read_clip
from fada_rt.config import AudioConfig, ModelConfig, get_preset
from fada_rt.models.audio import build_audio_frontend
from fada_rt.models.vae import VAE

INDEX_NAME = "index.json"


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict (names, shapes and values) — identifies a VAE."""
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(value.shape)).encode())
        h.update(value.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (T, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def resize_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Square frames (T, 3, H, H) resized to the model resolution (area filter when shrinking)."""
    if frames.shape[-1] == size and frames.shape[-2] == size:
        return frames
    if frames.shape[-1] != frames.shape[-2]:
        raise ValueError(f"training clips must be square, got {tuple(frames.shape[-2:])}")
    mode = "area" if frames.shape[-1] > size else "bilinear"
    return torch.nn.functional.interpolate(frames, size=(size, size), mode=mode)


@torch.no_grad()
def build_cache(
    *,
    data: str | Path,
    out: str | Path,
    vae: VAE,
    config: ModelConfig,
    manifest: str | None = None,
    batch_frames: int = 256,
    audio_variants: int = 0,
) -> Path:
    """Encode every clip of ``data`` (or of its ``manifest``) into ``out``; existing entries built with
    the same VAE and audio config are kept (the cache grows incrementally)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    digest = weights_digest(vae)
    index = read_index(out) if (out / INDEX_NAME).is_file() else None
    if index is not None:
        _check_index(index, digest=digest, audio=config.audio, resolution=config.resolution, where=out)
    clips: dict[str, int] = dict(index["clips"]) if index else {}
    frontend = build_audio_frontend(config.audio)
    vae = vae.eval()
    paths = list_clips(data, manifest=manifest)
    for path in tqdm(paths, desc="caching latents", unit="clip"):
        cid = clip_id_of(path)
        if cid in clips and (out / f"{cid}.safetensors").is_file():
            continue
        clip = read_clip(path)
        entry = encode_clip(clip.frames, clip.audio, vae=vae, frontend=frontend, config=config,
                            batch_frames=batch_frames, clip_id=cid, audio_variants=audio_variants)
        save_file(entry, str(out / f"{cid}.safetensors"))
        clips[cid] = int(entry["latents"].shape[0])
        _write_index(out, digest=digest, config=config, clips=clips, audio_variants=audio_variants)
    _write_index(out, digest=digest, config=config, clips=clips, audio_variants=audio_variants)
    return out


@torch.no_grad()
def audio_variant_rng(clip_id: str, variant: int) -> np.random.Generator:
    """The random stream of augmented audio copy ``variant`` of clip ``clip_id``."""
    return np.random.default_rng([zlib.crc32(clip_id.encode()), variant])


def encode_clip(frames: np.ndarray, audio: np.ndarray, *, vae: VAE, frontend: torch.nn.Module, config: ModelConfig,
                batch_frames: int = 256, clip_id: str = "", audio_variants: int = 0) -> dict[str, torch.Tensor]:
    """One cache entry, on the CPU in fp16: ``latents`` (T, C, h, w) of uint8 frames (T, H, W, 3) and
    ``audio`` (T, L, D) of 16 kHz mono float32 audio, computed on the VAE's device; with ``audio_variants``
    K > 0 also ``audio_aug`` (K, T, L, D) of K augmented copies of the audio."""
    device = next(vae.parameters()).device
    pixels = resize_frames(frames_to_tensor(frames), config.resolution)  # (T, 3, H, W)
    latents = torch.cat([vae.encode(pixels[i : i + batch_frames].to(device)).cpu()
                         for i in range(0, len(pixels), batch_frames)])  # (T, C, h, w)
    feats = frontend(torch.from_numpy(audio)[None])[0]  # (T, L, D)
    if feats.shape[0] != latents.shape[0]:
        raise ValueError(f"clip {clip_id}: {latents.shape[0]} frames but {feats.shape[0]} audio frames")
    entry = {"latents": latents.half().contiguous(), "audio": feats.half().contiguous()}
    if audio_variants:
        from train.audio_augment import augment_audio

        copies = [augment_audio(audio, sample_rate=config.audio.sample_rate, rng=audio_variant_rng(clip_id, k))[0]
                  for k in range(audio_variants)]
        entry["audio_aug"] = frontend(torch.from_numpy(np.stack(copies)).float()).half().contiguous()  # (K, T, L, D)
    return entry


def build_synthetic_cache(*, data: str | Path, out: str | Path, vae: VAE, config: ModelConfig, clips: int,
                          seed: int = 0, tier: str = "B", manifest: str | None = None, workers: int = 1,
                          min_seconds: float = 2.0, max_seconds: float = 4.0, batch_frames: int = 256,
                          speech: str = "synth", first_index: int = 0, audio_variants: int = 0) -> Path:
    """The cache :func:`build_cache` makes of ``python -m train.synthetic --out data --clips N --size
    RESOLUTION --tier T --seed S [--min-seconds --max-seconds]`` (bit-identical entries), without writing
    or decoding clip files: each clip is generated in memory (``workers`` processes), its audio rounded as
    the 16-bit wav would round it, and encoded at once. ``data`` gets the world's manifests, labels and
    ``world.json`` but no ``clips/``; ``manifest="A"`` renders and caches only the clean clips (and
    writes no B manifest). For machines without PyAV or disk to spare (a lent GPU)."""
    from concurrent.futures import ProcessPoolExecutor
    from contextlib import nullcontext
    from multiprocessing import get_context

    from fada_rt.clips import pcm16_round_trip, write_labels
    from train.synthetic.dataset import check_speech, clip_kind, write_world_index

    if manifest not in (None, "A", "B"):
        raise ValueError(f"manifest must be None, 'A' or 'B' for a synthetic world, got {manifest!r}")
    if manifest == "B" and tier != "B":
        raise ValueError("manifest B needs a tier-B world (--tier B)")
    data, out = Path(data), Path(out)
    if (data / "clips").is_dir():
        raise FileExistsError(f"{data} holds clip files; cache them with build_cache (python -m train.cache --data)")
    data.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    if (out / INDEX_NAME).is_file():
        raise FileExistsError(f"{out} already holds a cache; give a new --out")
    digest = weights_digest(vae)
    check_speech(speech)
    indices = [i for i in range(first_index, first_index + clips)
               if manifest != "A" or clip_kind(seed=seed, index=i, tier=tier) == "clean"]
    job = dict(seed=seed, size=config.resolution, tier=tier, min_seconds=min_seconds, max_seconds=max_seconds,
               identities=None, speech=speech)
    frontend = build_audio_frontend(config.audio)
    vae = vae.eval()
    cached: dict[str, int] = {}
    kinds: dict[str, str] = {}
    # spawn, not fork: the parent may hold a CUDA context; the workers only render (numpy)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) if workers > 1 else None
    with pool if pool is not None else nullcontext():
        made = (pool.map(_synthetic_clip, indices, [job] * len(indices), chunksize=4) if pool is not None
                else (_synthetic_clip(i, job) for i in indices))
        for clip in tqdm(made, total=len(indices), desc="synthetic clips -> cache", unit="clip"):
            entry = encode_clip(clip.frames, pcm16_round_trip(clip.audio), vae=vae, frontend=frontend, config=config,
                                batch_frames=batch_frames, clip_id=clip.id, audio_variants=audio_variants)
            save_file(entry, str(out / f"{clip.id}.safetensors"))
            write_labels(data, clip.id, clip.labels)
            cached[clip.id] = int(entry["latents"].shape[0])
            kinds[clip.id] = clip.labels["kind"]
    _write_index(out, digest=digest, config=config, clips=cached, audio_variants=audio_variants)
    write_world_index(data, kinds=kinds, tier=tier, clips=clips, job={**job, "clip_files": False, "first_index": first_index},
                      complete=manifest != "A")
    return out


def _synthetic_clip(index: int, job: dict[str, Any]):
    from train.synthetic.dataset import make_clip

    return make_clip(index=index, **job)


def _write_index(out: Path, *, digest: str, config: ModelConfig, clips: dict[str, int], audio_variants: int = 0) -> None:
    payload = {"vae_sha256": digest, "audio": asdict(config.audio), "resolution": config.resolution,
               "latent_channels": config.vae.latent_channels, "audio_variants": audio_variants,
               "clips": dict(sorted(clips.items()))}
    _write_json(out, payload)


def _write_json(out: Path, payload: dict[str, Any]) -> None:
    tmp = out / (INDEX_NAME + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(out / INDEX_NAME)


def read_index(folder: Path) -> dict[str, Any]:
    path = folder / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a latent cache ({INDEX_NAME} missing); build it with "
                                f"python -m train.cache")
    return json.loads(path.read_text())


def _check_index(index: dict[str, Any], *, digest: str | None, audio: AudioConfig, resolution: int,
                 where: Path) -> None:
    if digest is not None and index["vae_sha256"] != digest:
        raise ValueError(f"cache {where} was built with another VAE (sha256 {index['vae_sha256'][:12]}...); "
                         f"rebuild it with python -m train.cache --out {where}-new")
    if index["audio"] != asdict(audio) or index["resolution"] != resolution:
        raise ValueError(f"cache {where} was built for another audio front-end or resolution; rebuild it")


def open_cache(folder: str | Path, *, config: ModelConfig, vae_digest: str | None = None,
               clip_ids: list[str] | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Load cached clips into memory: ``{clip_id: {"latents": (T,C,h,w), "audio": (T,L,D)}}`` (fp16)."""
    folder = Path(folder)
    index = read_index(folder)
    _check_index(index, digest=vae_digest, audio=config.audio, resolution=config.resolution, where=folder)
    ids = clip_ids if clip_ids is not None else list(index["clips"])
    missing = [i for i in ids if i not in index["clips"]]
    if missing:
        raise KeyError(f"cache {folder} lacks clips {missing[:5]} ({len(missing)} in all); extend it with "
                       f"python -m train.cache")
    return {cid: load_file(str(folder / f"{cid}.safetensors")) for cid in ids}


def merge_worlds(*, sources: list[tuple[str | Path, str | Path]], data_out: str | Path, cache_out: str | Path) -> None:
    """Join worlds ``[(data, cache), ...]`` (same VAE, audio front-end and resolution; distinct clip ids) into
    one training set: ``data_out`` gets the union of each manifest and links to the labels, ``cache_out`` links
    to the cache entries and a joint index. Nothing is copied."""
    from fada_rt.clips import read_manifest, write_manifest

    data_out, cache_out = Path(data_out), Path(cache_out)
    if (cache_out / INDEX_NAME).exists() or (data_out / "world.json").exists():
        raise FileExistsError(f"{cache_out} or {data_out} already holds a world; give new folders")
    indices = [(Path(d), Path(c), read_index(Path(c))) for d, c in sources]
    first = indices[0][2]
    clips: dict[str, int] = {}
    for _, cache, index in indices:
        if {k: index[k] for k in ("vae_sha256", "audio", "resolution")} != \
                {k: first[k] for k in ("vae_sha256", "audio", "resolution")}:
            raise ValueError(f"cache {cache} was built with another VAE, audio front-end or resolution than "
                             f"{indices[0][1]}; rebuild it with the same --vae and --preset")
        shared = sorted(set(index["clips"]) & set(clips))
        if shared:
            raise ValueError(f"worlds share clip ids ({shared[:3]}...); generate one with --first-index beyond the other's")
        clips.update(index["clips"])
    cache_out.mkdir(parents=True, exist_ok=True)
    (data_out / "labels").mkdir(parents=True, exist_ok=True)
    for data, cache, index in indices:
        for cid in index["clips"]:
            os.symlink((cache / f"{cid}.safetensors").resolve(), cache_out / f"{cid}.safetensors")
            label = data / "labels" / f"{cid}.json"
            if label.is_file():
                os.symlink(label.resolve(), data_out / "labels" / f"{cid}.json")
    for name in ("A", "B"):
        ids = [i for data, _, _ in indices if (data / f"manifest_{name}.txt").is_file() for i in read_manifest(data, name)]
        if ids:
            write_manifest(data_out, name, ids)
    variants = min(int(index.get("audio_variants", 0)) for _, _, index in indices)
    _write_json(cache_out, {**{k: first[k] for k in ("vae_sha256", "audio", "resolution", "latent_channels")},
                            "audio_variants": variants, "clips": dict(sorted(clips.items()))})
    (data_out / "world.json").write_text(json.dumps({"merged": [[str(d), str(c)] for d, c, _ in indices]}, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--merge" in argv:
        return _merge_main(argv)
    from fada_rt.checkpoint import load_vae

    p = argparse.ArgumentParser(description="Cache VAE latents and audio features of a clip dataset, or of the "
                                            "synthetic world generated in memory (--synthetic N).")
    p.add_argument("--data", required=True, help="dataset folder in the clip format (clips/, manifests); with "
                                                 "--synthetic, the folder to create for the world's manifests and labels")
    p.add_argument("--vae", required=True, help="VAE checkpoint folder (python -m train.vae)")
    p.add_argument("--out", required=True, help="cache folder to create or extend")
    p.add_argument("--preset", default="tiny", help="model preset whose resolution and audio front-end to use")
    p.add_argument("--manifest", default=None, help="only the clips of this manifest (e.g. A or B)")
    p.add_argument("--synthetic", type=int, default=None, metavar="N",
                   help="generate clips 0..N-1 of the synthetic world in memory and cache them (the same entries as "
                        "python -m train.synthetic --clips N --size RESOLUTION, then this command; no clip files)")
    p.add_argument("--seed", type=int, default=0, help="with --synthetic: the world's seed")
    p.add_argument("--tier", choices=("A", "B"), default="B", help="with --synthetic: the world's tier")
    p.add_argument("--workers", type=int, default=2, help="with --synthetic: processes rendering clips")
    p.add_argument("--speech", default="synth", help="with --synthetic: the world's speech (python -m train.synthetic "
                                                     "--help; default: %(default)s)")
    p.add_argument("--first-index", type=int, default=0, help="with --synthetic: index of the first clip (default: %(default)s)")
    p.add_argument("--audio-variants", type=int, default=0, metavar="K",
                   help="also cache the features of K augmented copies of each clip's audio, for training with "
                        "--audio-augment (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="device the VAE encodes on (cpu, cuda)")
    args = p.parse_args(argv)
    if args.synthetic is None and (args.seed, args.tier, args.workers, args.speech, args.first_index) != (0, "B", 2, "synth", 0):
        p.error("--seed, --tier, --workers, --speech and --first-index describe a world generated with --synthetic N")
    if args.audio_variants < 0:
        p.error(f"--audio-variants must be >= 0, got {args.audio_variants}")
    config = get_preset(args.preset)
    vae = load_vae(args.vae, expect=config.vae)
    config = config.replace(vae=vae.config)
    vae = vae.to(args.device)
    if args.synthetic is None:
        build_cache(data=args.data, out=args.out, vae=vae, config=config, manifest=args.manifest,
                    audio_variants=args.audio_variants)
    else:
        build_synthetic_cache(data=args.data, out=args.out, vae=vae, config=config, clips=args.synthetic,
                              seed=args.seed, tier=args.tier, manifest=args.manifest, workers=args.workers,
                              speech=args.speech, first_index=args.first_index, audio_variants=args.audio_variants)


def _merge_main(argv: list[str] | None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.cache --merge", description="Join worlds into one training set.")
    p.add_argument("--merge", nargs="+", required=True, metavar="DATA:CACHE", help="worlds: data folder and its cache")
    p.add_argument("--data", required=True, help="data folder to create (manifests, label links)")
    p.add_argument("--out", required=True, help="cache folder to create (entry links, joint index)")
    args = p.parse_args(argv)
    pairs = [tuple(spec.split(":", 1)) for spec in args.merge]
    if any(len(pair) != 2 for pair in pairs):
        p.error("each --merge item is DATA:CACHE")
    merge_worlds(sources=pairs, data_out=args.data, cache_out=args.out)


if __name__ == "__main__":
    main()
