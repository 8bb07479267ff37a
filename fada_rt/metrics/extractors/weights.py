"""Strict loading of real-world extractor weights from local safetensors files."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file


def load_strict(module: torch.nn.Module, path: str | Path, *, what: str) -> torch.nn.Module:
    """Load ``path`` into ``module``; every key and shape must match exactly.

    The file must be safetensors with this project's parameter names (see the module's
    docstring for the naming); convert other checkpoints once with a small script.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found at {path} (expected a .safetensors file)")
    if path.suffix != ".safetensors":
        raise ValueError(f"{what} weights must be a .safetensors file, got {path.name}; pickled checkpoints are not loaded")
    state = load_file(str(path))
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match the {what} architecture: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items() if state[k].shape != v.shape]
    if wrong:
        raise ValueError(f"{path}: tensor shapes differ from the {what} architecture, e.g. {wrong[:3]} (file, model)")
    module.load_state_dict(state, strict=True)
    return module.eval()
