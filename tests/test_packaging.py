"""The wheel: one package, ``fada_rt``, carrying every data file the runtime reads (issue 22).

The full check (a fresh non-editable install run from another folder) is ``scripts/check_install.sh``.
"""

from __future__ import annotations

from pathlib import Path

import tomllib

import fada_rt
from fada_rt import assets

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(fada_rt.__file__).resolve().parent


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_only_fada_rt_is_installed() -> None:
    assert _setuptools()["packages"]["find"]["include"] == ["fada_rt*"]


def test_package_data_covers_every_data_file() -> None:
    globs = _setuptools()["package-data"]["fada_rt"]
    shipped = {p for g in globs for p in PACKAGE.glob(g) if p.is_file()}
    data = {p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}
    assert data - shipped == set(), f"data files the wheel would leave out: {sorted(data - shipped)}"
    needed = [assets.EXAMPLE_IMAGE, assets.EXAMPLE_AUDIO, assets.DEFAULT_CHECKPOINT / "model.safetensors",
              assets.DEFAULT_CHECKPOINT / "config.json"]
    assert all(p.resolve() in shipped for p in needed), "the embedded default must ship inside the package"
