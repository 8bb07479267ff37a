"""Per-sample log of distillation (``RUN/samples.csv``): window, t (per frame for a streaming student), scales, both losses, R and W of Eq. 8.

Clip labels (tier, kind) of the synthetic world are joined in for analysis only; training never reads them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from train.data import ChunkBatch

if TYPE_CHECKING:
    from train.distill import DistillLosses
    from train.distill_teacher import StepDraws


@torch.no_grad()
def log_samples(path: Path, step: int, batch: ChunkBatch, d: StepDraws, out: DistillLosses,
                labels: dict[str, dict[str, Any]]) -> None:
    """Append one row per sample of a distillation step (``labels``: tier / kind by clip, may be empty)."""
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["step", "clip", "tier", "kind", "window", "t", "cfg_a", "cfg_r", "l_distill", "l_gt",
                        "ratio", "weight"])
        for i, cid in enumerate(batch.clip_ids):
            lab = labels.get(cid, {})
            w.writerow([step, cid, lab.get("tier", ""), lab.get("kind", ""), _cell(d.window[i], "d"), _cell(d.t[i], ".4f"),
                        f"{float(d.cfg[i, 0]):.3f}", f"{float(d.cfg[i, 1]):.3f}", f"{float(out.l_distill[i].detach()):.6g}",
                        f"{float(out.l_gt[i].detach()):.6g}", f"{float(out.ratio[i]):.6g}", f"{float(out.weight[i]):.6g}"])


def _cell(value: torch.Tensor, spec: str) -> str:
    """A per-sample value, or a streaming student's per-frame values joined by ';' (oldest frame first)."""
    values = value.reshape(-1).tolist()
    return ";".join(format(int(v) if spec == "d" else float(v), spec) for v in values)


def read_labels_for(data: str | Path, clip_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Analysis labels (tier, kind) of the clips that have them — for logging only."""
    folder = Path(data) / "labels"
    out = {}
    for cid in clip_ids:
        path = folder / f"{cid}.json"
        if path.is_file():
            lab = json.loads(path.read_text())
            out[cid] = {"tier": lab.get("tier", ""), "kind": lab.get("kind", "")}
    return out
