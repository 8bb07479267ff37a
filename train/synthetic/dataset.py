"""One synthetic talking clip from a seed, and whole datasets in the clip format (docs/design.md §6).

Speech: ``speech="synth"`` (the formant synthesiser of :mod:`train.synthetic.speech`, the first world) or
speech engines (:mod:`train.synthetic.tts`: ``"tts"`` = espeak-ng and festival, or ``"flite"``, the held-out
engine): world speech v2, real synthesised sentences whose phones drive the mouth.

Seeds: clip ``i`` of a dataset with seed ``s`` draws each component from its own stream
``SeedSequence(entropy=s, spawn_key=(i, component))``, so a clip does not depend on how many
clips are made, in which order, or by how many processes. With ``identities=K`` clip i
uses identity (and voice) ``i % K``; by default every clip has its own identity.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from fada_rt.clips import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, write_clip, write_labels, write_manifest
from train.synthetic.degrade import degrade_audio, degrade_frames, sample_degradation
from train.synthetic.identity import Identity, sample_identity
from train.synthetic.motion import Motion, mouth_per_frame, sample_motion
from train.synthetic.render import render_frames
from train.synthetic.speech import Speaker, Speech, sample_speaker, synthesize_speech
from train.synthetic.tiers import check_tier, choose_kind, draw_offset_frames, tier_of
from train.synthetic.tts import Voice, check_engine, parse_engines, sample_voice, tts_speech

GENERATOR_VERSION = 1
MARGIN = SAMPLE_RATE  # speech is synthesised 1 s beyond both ends, so desync shifts real speech in
_COMPONENTS = {"kind": 0, "length": 1, "identity": 2, "speaker": 3, "speech": 4, "motion": 5, "offset": 6, "degrade": 7}


@dataclass(frozen=True)
class SyntheticClip:
    id: str
    frames: np.ndarray  # uint8 (T, H, W, 3)
    audio: np.ndarray  # float32 (S,), S = 640 T
    labels: dict[str, Any]


def component_rng(seed: int, index: int, component: str) -> np.random.Generator:
    """The random stream of one component of clip ``index`` in a dataset with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(index, _COMPONENTS[component])))


def clip_identity(*, seed: int, index: int, speech: str = "synth") -> tuple[Identity, Speaker | Voice]:
    """The face and voice of identity ``index`` (as used by clips with that identity): a formant-synthesiser
    speaker for ``speech="synth"``, else a voice of the named engines."""
    rng = component_rng(seed, index, "speaker")
    voice = sample_speaker(rng) if speech == "synth" else sample_voice(rng, parse_engines(speech))
    return sample_identity(component_rng(seed, index, "identity")), voice


def check_speech(speech: str) -> str:
    """Validate a ``speech`` option ("synth" or engines) and that its engines are installed."""
    if speech != "synth":
        for engine in parse_engines(speech):
            check_engine(engine)
    return speech


def clip_kind(*, seed: int, index: int, tier: str) -> str:
    """The kind clip ``index`` of the world with ``seed`` is drawn as (cheap: nothing is rendered)."""
    return choose_kind(component_rng(seed, index, "kind"), tier)


def make_clip(
    *,
    seed: int,
    index: int,
    size: int = 64,
    tier: str = "A",
    min_seconds: float = 2.0,
    max_seconds: float = 4.0,
    identities: int | None = None,
    kind: str | None = None,
    speech: str = "synth",
) -> SyntheticClip:
    """Generate clip ``index`` of the world with ``seed`` (``kind`` forces a kind, for tests)."""
    check_tier(tier)
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
    kind = clip_kind(seed=seed, index=index, tier=tier) if kind is None else kind
    tier_of(kind)  # validates the kind
    frames_n = round(component_rng(seed, index, "length").uniform(min_seconds, max_seconds) * FPS)
    num_samples = frames_n * SAMPLES_PER_FRAME
    identity_index = index if identities is None else index % identities
    identity, speaker = clip_identity(seed=seed, index=identity_index, speech=speech)
    speech_kind = speech
    speech = _speech(speaker, rng=component_rng(seed, index, "speech"), num_samples=num_samples + 2 * MARGIN,
                     expressive=kind == "expressive")
    window = slice(MARGIN, MARGIN + num_samples)
    motion = sample_motion(
        rng=component_rng(seed, index, "motion"),
        openness=mouth_per_frame(speech.openness[window], frames_n),
        width=mouth_per_frame(speech.width[window], frames_n),
        expressive=kind == "expressive",
        frozen_mouth=kind == "frozen",
    )
    frames = render_frames(identity, motion, size=size)
    offset = draw_offset_frames(component_rng(seed, index, "offset")) if kind == "desynced" else 0
    start = MARGIN - offset * SAMPLES_PER_FRAME  # audio[n] = speech[n - offset]: delayed if offset > 0
    audio = speech.audio[start : start + num_samples].copy()
    degradation = None
    if kind == "degraded":
        rng = component_rng(seed, index, "degrade")
        degradation = sample_degradation(rng)
        frames = degrade_frames(frames, degradation, rng=rng)
        audio = degrade_audio(audio, degradation, rng=rng)
    clip_id = f"{index:06d}"
    labels = _labels(clip_id, seed, index, identity_index, kind, offset, size, identity, speaker, motion, degradation)
    labels["speech"] = speech_kind
    # the spoken stretches in the video's time (seconds): where the mouth should move
    labels["speech_segments"] = [[round(max(0, a - MARGIN) / SAMPLE_RATE, 4), round(min(num_samples, b - MARGIN) / SAMPLE_RATE, 4)]
                                 for a, b in speech.segments if b > MARGIN and a < MARGIN + num_samples]
    return SyntheticClip(id=clip_id, frames=frames, audio=audio, labels=labels)


def _speech(speaker: Speaker | Voice, *, rng: np.random.Generator, num_samples: int, expressive: bool) -> Speech:
    if isinstance(speaker, Voice):
        return tts_speech(rng=rng, num_samples=num_samples, voice=speaker, expressive=expressive)
    return synthesize_speech(rng=rng, num_samples=num_samples, speaker=speaker, expressive=expressive)


def _labels(clip_id, seed, index, identity_index, kind, offset, size, identity, speaker, motion: Motion, degradation) -> dict:
    return {
        "id": clip_id,
        "tier": tier_of(kind),
        "kind": kind,
        "offset_frames": offset,
        "offset_seconds": offset / FPS,
        "seed": seed,
        "index": index,
        "identity_index": identity_index,
        "size": size,
        "generator_version": GENERATOR_VERSION,
        "degradation": None if degradation is None else degradation.to_dict(),
        "identity": identity.to_dict(),
        "speaker": {k: getattr(speaker, k) for k in speaker.__dataclass_fields__},  # a Speaker or a tts Voice
        "frames": motion.to_lists(),
    }


def generate_dataset(
    *,
    out: str | Path,
    clips: int,
    size: int = 64,
    tier: str = "A",
    seed: int = 0,
    min_seconds: float = 2.0,
    max_seconds: float = 4.0,
    identities: int | None = None,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    speech: str = "synth",
    first_index: int = 0,
) -> dict[str, Any]:
    """Write ``clips`` clips (indices ``first_index`` .. ``first_index + clips - 1``, so two worlds can hold
    distinct clip ids), their labels and manifests to ``out``; return a summary."""
    check_tier(tier)
    check_speech(speech)
    if first_index < 0:
        raise ValueError(f"first_index must be >= 0, got {first_index}")
    if clips < 1:
        raise ValueError(f"clips must be >= 1, got {clips}")
    if identities is not None and identities < 1:
        raise ValueError(f"identities must be >= 1, got {identities}")
    out = Path(out)
    if (out / "clips").is_dir() and any((out / "clips").iterdir()) and not overwrite:
        raise FileExistsError(f"{out} already holds clips; choose a new folder or pass overwrite=True (--overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    job = dict(out=str(out), seed=seed, size=size, tier=tier, min_seconds=min_seconds, max_seconds=max_seconds,
               identities=identities, speech=speech)
    indices = range(first_index, first_index + clips)
    kinds: dict[str, str] = {}
    bar = tqdm(total=clips, desc=f"synthetic tier {tier}", unit="clip", disable=not progress)
    if workers <= 1:
        for i in indices:
            cid, kind = _write_one(i, **job)
            kinds[cid] = kind
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_write_one, i, **job) for i in indices]
            for f in futures:
                cid, kind = f.result()
                kinds[cid] = kind
                bar.update()
    bar.close()
    return write_world_index(out, kinds=kinds, tier=tier, clips=clips,
                             job={**{k: v for k, v in job.items() if k != "out"}, "first_index": first_index})


def write_world_index(out: Path, *, kinds: dict[str, str], tier: str, clips: int, job: dict[str, Any],
                      complete: bool = True) -> dict[str, Any]:
    """Manifests (A: the clean clips; B: all of a complete tier-B world) and ``world.json`` of a
    generated world whose clip ``kinds`` are ``{clip_id: kind}``; returns the summary."""
    write_manifest(out, "A", [c for c, k in kinds.items() if k == "clean"])
    if tier == "B" and complete:
        write_manifest(out, "B", list(kinds))
    summary = {"generator_version": GENERATOR_VERSION, **job, "clips": clips}
    summary["kinds"] = {k: sum(1 for v in kinds.values() if v == k) for k in sorted(set(kinds.values()))}
    (out / "world.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return summary


def _write_one(index: int, *, out: str, **kwargs: Any) -> tuple[str, str]:
    clip = make_clip(index=index, **kwargs)
    write_clip(dataset=out, clip_id=clip.id, frames=clip.frames, audio=clip.audio, source="synthetic",
               extra={"generator_version": GENERATOR_VERSION})
    write_labels(out, clip.id, clip.labels)
    return clip.id, clip.labels["kind"]
