"""Training state on disk without pickles: weights and optimizer moments in safetensors, the rest
(step, config, optimizer hyper-parameters, loss-scaler state) in JSON.

A run folder ``runs/NAME/checkpoints/step_000500/`` holds ``model.safetensors`` (the trained
weights), ``ema.safetensors``, ``optimizer.safetensors`` and ``state.json``. With the per-step
deterministic randomness of the trainers (every draw comes from ``(seed, step, rank)``), loading one
resumes the exact loss sequence of an uninterrupted run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fada_rt.checkpoint import load_strict

STATE_NAME = "state.json"


def step_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:07d}"


def latest_step_dir(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run (one with ``state.json``), or None."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    done = sorted(p for p in folder.glob("step_*") if (p / STATE_NAME).is_file())
    return done[-1] if done else None


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_training_state(
    folder: str | Path,
    *,
    model: nn.Module,
    ema: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    step: int,
    extra: dict[str, Any],
) -> Path:
    """Write a resumable checkpoint atomically (a ``.tmp`` folder renamed at the end)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    if ema is not None:
        save_file({k: v.detach().contiguous().cpu() for k, v in ema.state_dict().items()}, str(tmp / "ema.safetensors"))
    tensors, opt_meta = _optimizer_tensors(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / STATE_NAME).write_text(json.dumps({"step": step, "optimizer": opt_meta, **extra}, indent=1) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def load_training_state(
    folder: str | Path, *, model: nn.Module, ema: nn.Module | None, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore weights, EMA and optimizer moments in place; returns the JSON state (``step``, ...)."""
    folder = Path(folder)
    if not (folder / STATE_NAME).is_file():
        raise FileNotFoundError(f"{folder} is not a complete training checkpoint ({STATE_NAME} missing)")
    meta = json.loads((folder / STATE_NAME).read_text())
    load_strict(model, load_file(str(folder / "model.safetensors")), source=str(folder / "model.safetensors"))
    if ema is not None:
        load_strict(ema, load_file(str(folder / "ema.safetensors")), source=str(folder / "ema.safetensors"))
    device = next(model.parameters()).device
    tensors = {k: v.to(device) for k, v in load_file(str(folder / "optimizer.safetensors")).items()}
    optimizer.load_state_dict(_optimizer_state(tensors, meta["optimizer"]))
    return meta
