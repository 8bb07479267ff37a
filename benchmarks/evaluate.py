"""python -m benchmarks.evaluate --pred DIR --ref DIR [--out JSON]

Scores generated clips against reference clips. Each folder is a dataset in the clip format
(``clips/<id>/``; ``--manifest`` picks a subset of the ref) or a folder of .mp4/.mkv files
with audio. Pred clips are matched to ref clips by id (folder name or file stem); every pred
clip needs a ref clip. The reference portrait for the identity error is the ref clip's
frame 0, or ``meta.json``'s ``extra.reference_frame`` when given.

Default metric spaces are the synthetic world's (shipped mouth-state estimator, fixed random
features); ``--inception``, ``--i3d`` and ``--syncnet`` switch FID, FVD and sync to real-world
networks loaded from local safetensors files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fada_rt.clips import clip_id_of, list_clips, read_clip
from fada_rt.metrics.suite import Extractors, evaluate_clips

ROWS = (
    ("sync_offset", "sync offset (frames, mean)"),
    ("sync_abs_offset", "|sync offset| (frames, mean)"),
    ("sync_in_sync", "clips with |offset| <= 1"),
    ("sync_confidence", "LSE-C confidence (higher better)"),
    ("sync_distance", "LSE-D distance (lower better)"),
    ("mouth_mae", "mouth openness MAE vs ref"),
    ("mouth_open_corr", "mouth openness follows audio (corr.)"),
    ("mouth_width_corr", "mouth width follows audio (corr.)"),
    ("identity_error", "identity error vs portrait"),
    ("jitter", "temporal jitter (8-bit levels)"),
    ("fid", "FID analogue"),
    ("fvd", "FVD analogue"),
)


def evaluate_folders(
    *,
    pred: str | Path,
    ref: str | Path,
    manifest: str | None = None,
    max_clips: int | None = None,
    extractors: Extractors | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Read, match and score two folders; returns ``{"summary", "per_clip", "config"}``."""
    pred_paths = {clip_id_of(p): p for p in list_clips(pred)}
    ref_paths = {clip_id_of(p): p for p in list_clips(ref, manifest=manifest)}
    unmatched = sorted(set(pred_paths) - set(ref_paths))
    if unmatched:
        raise ValueError(f"{len(unmatched)} pred clips have no ref clip of the same id (e.g. {unmatched[:5]}); "
                         f"name pred clips after their ref clips")
    ids = sorted(pred_paths)[:max_clips]
    preds = [read_clip(pred_paths[i]) for i in ids]
    refs = [read_clip(ref_paths[i]) for i in ids]
    extractors = extractors or Extractors.synthetic()
    result = evaluate_clips(preds, refs, extractors=extractors, progress=progress)
    result["config"] = {
        "pred": str(pred),
        "ref": str(ref),
        "manifest": manifest,
        "clips": len(ids),
        "extractors": {k: getattr(getattr(extractors, k), "name", type(getattr(extractors, k)).__name__) for k in ("frame", "clip", "sync")},
    }
    return result


def format_table(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = [f"{'metric':<36} {'pred':>12} {'ref (GT)':>12}", "-" * 62]
    for key, label in ROWS:
        if key not in s:
            continue
        ref = s.get(f"ref_{key}")
        lines.append(f"{label:<36} {s[key]:>12.4f} {'' if ref is None else f'{ref:12.4f}':>12}")
    lines.append(f"clips: {s['clips']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.evaluate", description="Score generated clips against reference clips.")
    p.add_argument("--pred", required=True, help="folder of generated clips (clip format or .mp4 files)")
    p.add_argument("--ref", required=True, help="folder of reference clips (clip format or .mp4 files)")
    p.add_argument("--out", default=None, help="JSON file for the full results (default: PRED/eval.json)")
    p.add_argument("--manifest", default=None, help="restrict the ref dataset to this manifest (e.g. A)")
    p.add_argument("--max-clips", type=int, default=None, help="score only the first N matched clips (sorted by id)")
    p.add_argument("--mouth-weights", default=None, help="folder with mouth.safetensors + config.json (default: shipped)")
    p.add_argument("--inception", default=None, help="InceptionV3 safetensors: real FID instead of the analogue")
    p.add_argument("--i3d", default=None, help="I3D safetensors: real FVD instead of the analogue")
    p.add_argument("--syncnet", default=None, help="SyncNet safetensors: real LSE-C/LSE-D instead of the mouth-state sync")
    a = p.parse_args(argv)
    ex = _extractors(a)
    result = evaluate_folders(pred=a.pred, ref=a.ref, manifest=a.manifest, max_clips=a.max_clips, extractors=ex)
    out = Path(a.out) if a.out else Path(a.pred) / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(format_table(result))
    print(f"wrote {out}")


def _extractors(a: argparse.Namespace) -> Extractors:
    from fada_rt.metrics.features import FixedClipFeatures, FixedFrameFeatures
    from fada_rt.metrics.mouth import WEIGHTS_DIR, MouthEstimator

    est = MouthEstimator.load(a.mouth_weights or WEIGHTS_DIR)
    frame = FixedFrameFeatures()
    ex = Extractors(frame=frame, clip=FixedClipFeatures(frame), sync=est, mouth=est)
    if a.inception:
        from fada_rt.metrics.extractors.inception import InceptionFeatures

        ex.frame = InceptionFeatures.from_file(a.inception)
    if a.i3d:
        from fada_rt.metrics.extractors.i3d import I3DFeatures

        ex.clip = I3DFeatures.from_file(a.i3d)
    if a.syncnet:
        from fada_rt.metrics.extractors.syncnet import SyncNetEmbedder

        ex.sync = SyncNetEmbedder.from_file(a.syncnet)
    return ex


if __name__ == "__main__":
    main()
