"""On-disk cache of the teacher's PeRFlow window solves (docs/design.md §3.3 step 2).

A solve is a pure function of the teacher's weights, the cached data and the draws of
(seed, step, rank), so every distillation variant that shares those (``DistillConfig.solve_key``)
reuses the same files: the ablations of Tables 2-4 pay for the teacher once per family.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors.torch import load_file, save_file
from torch import Tensor

if TYPE_CHECKING:
    from train.distill import DistillConfig


class SolveCache:
    """Teacher window ends on disk, one safetensors file per (rank, step), under a folder named by
    the hash of everything a solve depends on."""

    def __init__(self, root: str | Path, *, teacher_digest: str, data_digest: str, config: DistillConfig) -> None:
        key = json.dumps({"teacher": teacher_digest, "data": data_digest, **config.solve_key()}, sort_keys=True)
        self.folder = Path(root) / hashlib.sha256(key.encode()).hexdigest()[:16]
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "key.json").write_text(key + "\n")

    def path(self, step: int, rank: int) -> Path:
        return self.folder / f"r{rank}_s{step:07d}.safetensors"

    def get(self, step: int, rank: int) -> Tensor | None:
        p = self.path(step, rank)
        return load_file(str(p))["z_end"] if p.is_file() else None

    def put(self, step: int, rank: int, z_end: Tensor) -> None:
        tmp = self.path(step, rank).with_suffix(".tmp")
        save_file({"z_end": z_end.detach().cpu().contiguous()}, str(tmp))
        tmp.replace(self.path(step, rank))
