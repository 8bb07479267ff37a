"""All metrics of one evaluation: pred clips against ref clips (docs/design.md §6).

Per clip (pred matched to ref by id): sync of the pred's frames with its own audio
(offset, LSE-C confidence, LSE-D distance), identity error against the reference portrait,
temporal jitter, and with the synthetic world's mouth estimator: the mean absolute difference of
the estimated mouth openness against ref (``mouth_mae``) and, for pred and ref alike, how closely
each mouth dimension follows what the audio calls for (``mouth_open_corr``, ``mouth_width_corr``:
Pearson correlation at offset 0 — which part of the sync distance is missing). Over all clips: the
FID and FVD analogues.
The same numbers are computed for the ref clips against themselves where that makes sense,
so a table can show what ground truth scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from fada_rt.clips import Clip
from fada_rt.metrics.features import FixedClipFeatures, FixedFrameFeatures
from fada_rt.metrics.fid import fid
from fada_rt.metrics.fvd import fvd
from fada_rt.metrics.identity import identity_error
from fada_rt.metrics.jitter import temporal_jitter
from fada_rt.metrics.mouth import MouthEstimator
from fada_rt.metrics.sync import MAX_OFFSET, sync_score


@dataclass
class Extractors:
    """What each metric looks through; defaults are the synthetic world's fixed spaces."""

    frame: Any = None  # FID: uint8 (N, H, W, 3) -> (N, D)
    clip: Any = None  # FVD: uint8 (N, F, H, W, 3) -> (N, D), with .frames_per_clip
    sync: Any = None  # .embed(frames, audio) -> (video (T, D), audio (T, D))
    mouth: MouthEstimator | None = None  # mouth_mae; None skips it
    names: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def synthetic() -> Extractors:
        est = MouthEstimator.load()
        frame = FixedFrameFeatures()
        return Extractors(frame=frame, clip=FixedClipFeatures(frame), sync=est, mouth=est)


def reference_portrait(clip: Clip) -> np.ndarray:
    """The portrait identity is judged against: frame ``meta["extra"]["reference_frame"]`` or 0."""
    index = int(clip.meta.get("extra", {}).get("reference_frame", 0))
    if not 0 <= index < clip.num_frames:
        raise ValueError(f"clip {clip.id}: reference_frame {index} is outside its {clip.num_frames} frames")
    return clip.frames[index]


def clip_metrics(pred: Clip, ref: Clip, ex: Extractors, *, max_offset: int = MAX_OFFSET) -> dict[str, Any]:
    row: dict[str, Any] = {"id": pred.id, "frames": pred.num_frames}
    seen_open = {}
    for prefix, clip in (("", pred), ("ref_", ref)):
        video, audio = ex.sync.embed(clip.frames, clip.audio)
        s = sync_score(video, audio, max_offset=max_offset)
        row |= {f"{prefix}sync_offset": s.offset, f"{prefix}sync_confidence": s.confidence,
                f"{prefix}sync_distance": s.distance}
        row[f"{prefix}identity_error"] = identity_error(clip.frames, reference_portrait(ref))
        row[f"{prefix}jitter"] = temporal_jitter(clip.frames)
        if ex.mouth is not None:  # the mouth states once per clip (they are the sync embedding when it is the estimator)
            seen, heard = (video, audio) if ex.mouth is ex.sync else ex.mouth.embed(clip.frames, clip.audio)
            row |= {f"{prefix}{k}": v for k, v in follow_correlations(seen, heard).items()}
            seen_open[prefix] = seen[:, 0]
    if ex.mouth is not None:
        t = min(pred.num_frames, ref.num_frames)
        row["mouth_mae"] = float(np.abs(seen_open[""][:t] - seen_open["ref_"][:t]).mean())
    return row


def mouth_follow(estimator: MouthEstimator, clip: Clip) -> dict[str, float]:
    """Correlation over the clip's frames of the mouth openness / width seen in its frames with those its
    audio calls for; a dimension that does not vary (a silent clip, a frozen mouth) is left out."""
    return follow_correlations(*estimator.embed(clip.frames, clip.audio))


def follow_correlations(seen: np.ndarray, heard: np.ndarray) -> dict[str, float]:
    """:func:`mouth_follow` from the estimator's (T, 2) embeddings: openness, width seen / called for."""
    out = {}
    for d, name in enumerate(("mouth_open_corr", "mouth_width_corr")):
        if seen[:, d].std() > 1e-6 and heard[:, d].std() > 1e-6:
            out[name] = float(np.corrcoef(seen[:, d], heard[:, d])[0, 1])
    return out


def evaluate_clips(
    pred: Sequence[Clip],
    ref: Sequence[Clip],
    *,
    extractors: Extractors,
    progress: bool = True,
    max_offset: int = MAX_OFFSET,
    fvd_stride: int | None = None,
) -> dict[str, Any]:
    """Per-clip rows and a summary; ``pred[i]`` is judged against ``ref[i]``."""
    if len(pred) != len(ref) or not pred:
        raise ValueError(f"need equally many (>= 1) pred and ref clips, got {len(pred)} and {len(ref)}")
    rows = [clip_metrics(p, r, extractors, max_offset=max_offset) for p, r in tqdm(list(zip(pred, ref)), desc="per-clip metrics", disable=not progress)]
    summary: dict[str, Any] = {"clips": len(rows)}
    keys = dict.fromkeys(k for r in rows for k in r if k not in ("id", "frames"))  # some rows lack some keys
    for k in keys:
        values = np.array([r[k] for r in rows if k in r], np.float64)
        summary[k] = float(values.mean())
    summary["sync_abs_offset"] = float(np.mean([abs(r["sync_offset"]) for r in rows]))
    summary["sync_in_sync"] = float(np.mean([abs(r["sync_offset"]) <= 1 for r in rows]))
    summary["ref_sync_in_sync"] = float(np.mean([abs(r["ref_sync_offset"]) <= 1 for r in rows]))
    pf, rf = [c.frames for c in pred], [c.frames for c in ref]
    summary["fid"] = fid(pf, rf, extractor=extractors.frame)
    summary["fvd"] = fvd(pf, rf, extractor=extractors.clip, stride=fvd_stride)
    return {"summary": summary, "per_clip": rows}


def seed_list(seed: int | Sequence[int]) -> list[int]:
    """One seed or several as a non-empty list (the ``--seed`` of the benchmarks takes one or more)."""
    seeds = [seed] if isinstance(seed, int) else list(seed)
    if not seeds:
        raise ValueError("need at least one noise seed")
    return seeds


def mean_over_seeds(summaries: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, float]:
    """Each key's mean over the summaries of the same clips generated with different noise seeds.

    One seed's Sync-D on 16 tiny-teacher clips moves by up to ~0.02 with the seed (the generated mouth
    is partly the noise's), as much as many A/B differences; averaging seeds is what makes them
    comparable. A key that is nan (absent) in some seeds is averaged over the others; nan in all stays nan.
    """
    if not summaries:
        raise ValueError("mean_over_seeds needs the summary of at least one seed")
    out = {}
    for key in keys:
        values = np.array([float(s.get(key, np.nan)) for s in summaries])
        finite = values[np.isfinite(values)]
        out[key] = float(finite.mean()) if finite.size else float("nan")
    return out
