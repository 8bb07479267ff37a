"""The trainers' command lines are generated from their config dataclasses (train/cli.py): help text from
each field's ``#:`` comment with argparse's default, types from the annotations, every field an option, and
every flag the recipes use (scripts/train_tiny.sh, the first GPU lease's teacher runs) still parses to the same config."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

import pytest

from fada_rt.config import dataclass_from_dict
from fada_rt.precision import Precision
from train import distill as distill_mod
from train import teacher as teacher_mod
from train.cli import (
    HelpFormatter,
    add_dataclass_options,
    config_dict,
    dataclass_from_args,
    field_docs,
    option_flags,
)
from train.distill import VARIANTS, DistillConfig
from train.loop import LoopConfig, RunOptions, TrainConfig
from train.teacher import TeacherTrainConfig


@dataclass(frozen=True)
class Inner:
    #: the inner rate
    rate: float = 0.5


@dataclass(frozen=True)
class Toy:
    """A toy config."""

    #: where it goes
    path: str
    #: how many, 100% of them
    count: int = 3
    #: a scale
    scale: float = 1.5
    #: a name, or none
    name: str | None = None
    #: a switch
    switch: bool = False
    #: the kind
    kind: Literal["a", "b"] = "a"
    #: the precision
    precision: Precision = Precision.FP32
    #: a range
    span: tuple[float, float] = field(default=(1.0, 2.0), metadata={"metavar": ("LOW", "HIGH")})
    #: some sizes
    sizes: tuple[int, ...] = (1,)
    #: a colour, from a tuple elsewhere
    colour: str = field(default="red", metadata={"choices": ("red", "blue")})
    #: the inner part
    inner: Inner = field(default_factory=Inner)
    #: another inner part, with its own default
    other: Inner = field(default_factory=lambda: Inner(rate=0.75))


def _parser(cls: type = Toy, **kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    add_dataclass_options(p, cls, **kw)
    return p


def _option_help(parser: argparse.ArgumentParser, flag: str) -> str:
    """The help of one option as --help prints it, on one line."""
    action = next(a for a in parser._actions if flag in a.option_strings)
    formatter = parser._get_formatter()
    return " ".join(formatter._expand_help(action).split()) if action.help else ""


def test_help_is_the_field_doc_and_argparse_prints_the_default() -> None:
    p = _parser()
    assert _option_help(p, "--count") == "how many, 100% of them (default: 3)"
    assert _option_help(p, "--scale") == "a scale (default: 1.5)"
    assert _option_help(p, "--precision") == "the precision (default: fp32)"
    assert _option_help(p, "--span") == "a range (default: (1.0, 2.0))"
    assert _option_help(p, "--inner-rate") == "the inner rate (default: 0.5)"
    assert _option_help(p, "--other-rate") == "the inner rate (default: 0.75)"  # the field's default's
    assert _option_help(p, "--path") == "where it goes"  # required: no default
    text = " ".join(p.format_help().split())
    assert "--precision {fp32,fp16,bf16}" in text and "--kind {a,b}" in text and "--colour {red,blue}" in text
    assert "--span LOW HIGH" in text and "--switch, --no-switch" in text
    assert "Toy: A toy config." in text and "Toy.inner: the inner part" in text  # groups
    # defaults from an instance (a preset): shown and used
    p = _parser(defaults=Toy(path="p", count=7, inner=Inner(rate=0.25)))
    assert _option_help(p, "--count") == "how many, 100% of them (default: 7)"
    assert _option_help(p, "--path") == "where it goes (default: p)"
    assert dataclass_from_args(Toy, p.parse_args([])) == Toy(path="p", count=7, inner=Inner(rate=0.25))


def test_types_come_from_the_annotations() -> None:
    p = _parser()
    args = p.parse_args(["--path", "x", "--count", "4", "--scale", "0.25", "--name", "n", "--switch", "--kind", "b",
                         "--precision", "bf16", "--span", "0", "3", "--sizes", "2", "3", "4", "--colour", "blue",
                         "--inner-rate", "2"])
    config = dataclass_from_args(Toy, args)
    assert config == Toy(path="x", count=4, scale=0.25, name="n", switch=True, kind="b", precision=Precision.BF16,
                         span=(0.0, 3.0), sizes=(2, 3, 4), colour="blue", inner=Inner(rate=2.0))
    assert isinstance(config.span, tuple) and isinstance(config.sizes, tuple)
    assert dataclass_from_args(Toy, p.parse_args(["--path", "x"])) == Toy(path="x")
    assert dataclass_from_args(Toy, p.parse_args(["--path", "x", "--no-switch"])).switch is False
    # Precision.parse reads the aliases ("no" is accelerate's fp32)
    for text, expected in (("no", Precision.FP32), ("float16", Precision.FP16), ("fp32", Precision.FP32)):
        assert dataclass_from_args(Toy, p.parse_args(["--path", "x", "--precision", text])).precision is expected
    for bad in (["--precision", "fp8"], ["--kind", "c"], ["--colour", "green"], ["--count", "1.5"],
                ["--span", "1"], ["--bogus", "1"]):
        with pytest.raises(SystemExit):
            p.parse_args(["--path", "x", *bad])
    with pytest.raises(SystemExit):
        p.parse_args([])  # --path is required


def test_exclude_and_inline() -> None:
    p = _parser(exclude=("count", "inner.rate"), inline=("inner",))
    assert option_flags(Toy, exclude=("count",), inline=("inner",))["inner.rate"] == "--rate"
    flags = {s for a in p._actions for s in a.option_strings}
    assert "--count" not in flags and "--rate" not in flags and "--inner-rate" not in flags
    assert dataclass_from_args(Toy, p.parse_args(["--path", "x"])) == Toy(path="x")
    p = _parser(exclude=("other.rate",))  # an excluded nested field keeps its value in the field's default
    assert dataclass_from_args(Toy, p.parse_args(["--path", "x"])).other == Inner(rate=0.75)
    p = _parser(inline=("inner",))
    assert dataclass_from_args(Toy, p.parse_args(["--path", "x", "--rate", "3"])).inner == Inner(rate=3.0)


def test_unknown_config_keys_are_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown config keys at 'Toy': \['bogus'\]"):
        dataclass_from_dict(Toy, {"path": "x", "bogus": 1}, path="Toy")
    with pytest.raises(ValueError, match=r"unknown config keys at 'Toy.inner': \['speed'\]"):
        dataclass_from_dict(Toy, {"path": "x", "inner": {"speed": 1}}, path="Toy")
    with pytest.raises(TypeError):
        dataclasses.replace(TeacherTrainConfig(), bogus=1)
    with pytest.raises(SystemExit):
        teacher_mod.build_parser().parse_args(["--data", "d", "--cache", "c", "--run", "r", "--bogus", "1"])
    # the JSON form a run saves reads back to the same config
    for config in (TeacherTrainConfig(loop=LoopConfig(mixed_precision="bf16")), *VARIANTS.values()):
        data = config_dict(config)
        assert data["loop"]["mixed_precision"] in ("fp32", "bf16")
        assert dataclass_from_dict(type(config), data, path="run") == config


def test_loop_precision_is_the_one_precision_type() -> None:
    assert LoopConfig().mixed_precision is Precision.FP32
    assert LoopConfig(mixed_precision="no").mixed_precision is Precision.FP32  # configs saved before Precision
    assert LoopConfig(mixed_precision="bf16").mixed_precision.accelerate == "bf16"
    assert LoopConfig(mixed_precision="fp32").mixed_precision.accelerate == "no"
    assert config_dict(LoopConfig(mixed_precision="no"))["mixed_precision"] == "fp32"
    with pytest.raises(ValueError, match="unknown precision"):
        LoopConfig(mixed_precision="fp8")


# ---- the trainers ------------------------------------------------------------------------------

REQUIRED = ["--data", "d", "--cache", "c", "--run", "r"]


def _leaf_paths(cls: type, prefix: str = "") -> list[str]:
    """Every field of a config, nested ones as "loop.steps", walked independently of train.cli."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += _leaf_paths(hints[f.name], f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def _get(config, path: str):
    for name in path.split("."):
        config = getattr(config, name)
    return config


def _other_value(cls: type, path: str, default):
    """A valid value != default for one field, and its command-line words (with any companion option)."""
    *parents, name = path.split(".")
    owner = cls
    for parent in parents:
        owner = typing.get_type_hints(owner)[parent]
    hint = typing.get_type_hints(owner)[name]
    f = next(f for f in dataclasses.fields(owner) if f.name == name)
    companion = {"sync_weight": ["--sync-expert", "x"], "sync_expert": ["--sync-weight", "0.1"],
                 "validate_every": ["--val-data", "v"]}.get(name, [])
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if hint is bool:
        return (not default), [], companion
    choices = typing.get_args(hint) if typing.get_origin(hint) is Literal else f.metadata.get("choices")
    if choices:
        value = next(c for c in choices if c != default)
        return value, [str(value)], companion
    if isinstance(default, Enum):
        value = next(m for m in type(default) if m != default)
        return value, [str(value.value)], companion
    if isinstance(default, tuple):
        value = (default[0], default[1] + 1.0)
        return value, [str(v) for v in value], companion
    if hint is int:
        value = 7 if default is None else default + 1
        return value, [str(value)], companion
    if hint is float:
        value = 0.05 if not default else default * 1.5
        return value, [repr(value)], companion
    assert hint is str, (path, hint)
    value = "x-" + (default or "v")
    return value, [value], companion


CLIS = [
    ("teacher", teacher_mod.build_parser, TeacherTrainConfig, TeacherTrainConfig()),
    ("distill fast", lambda: distill_mod.build_parser("fast"), DistillConfig, VARIANTS["fast"]),
    ("distill balanced", lambda: distill_mod.build_parser("balanced"), DistillConfig, VARIANTS["balanced"]),
]


@pytest.mark.parametrize(("name", "build", "cls", "base"), CLIS, ids=[c[0] for c in CLIS])
def test_every_config_field_is_an_option(name, build, cls, base) -> None:
    parser = build()
    argv = REQUIRED + (["--teacher", "t", "--variant", name.split()[1]] if name.startswith("distill") else [])
    args = parser.parse_args(argv)
    assert dataclass_from_args(cls, args, defaults=base) == base  # the defaults are the config's
    assert dataclass_from_args(RunOptions, args) == RunOptions(data="d", cache="c", run="r")
    for config_cls, config_base in ((cls, base), (RunOptions, RunOptions(data="d", cache="c", run="r"))):
        flags = option_flags(config_cls, inline=("loop",))
        assert sorted(flags) == sorted(_leaf_paths(config_cls))
        for path, flag in flags.items():
            default = _get(config_base, path)
            value, words, companion = _other_value(config_cls, path, default)
            if isinstance(default, bool):
                words_flag = [flag if value else "--no-" + flag[2:]]
            else:
                words_flag = [flag, *words]
            parsed = parser.parse_args(argv + words_flag + companion)
            config = dataclass_from_args(config_cls, parsed, defaults=config_base if config_cls is cls else None)
            assert _get(config, path) == value, (path, words_flag)
            assert type(_get(config, path)) is type(value), path


def test_every_config_field_is_documented_and_no_help_restates_a_default() -> None:
    for cls in (LoopConfig, TrainConfig, RunOptions, TeacherTrainConfig, DistillConfig):
        docs = field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert not missing, f"{cls.__name__} fields without a #: comment: {missing}"
    assert field_docs(DistillConfig)["loop"] == field_docs(TrainConfig)["loop"]  # inherited
    for parser in (teacher_mod.build_parser(), distill_mod.build_parser("balanced")):
        for action in parser._actions:
            if action.dest in ("help", "variant"):
                continue
            assert "default" not in (action.help or "").replace("%(default)s", ""), action.option_strings
        text = " ".join(parser.format_help().split())
        assert "--mixed-precision {fp32,fp16,bf16}" in text
    gt = " ".join(distill_mod.build_parser("B-fixed-0.2").format_help().split())
    assert "--gt-w0 W0 GTWeightConfig.w0 (default: 0.2)" in gt and "--gt-mode {fixed,unlimited,adaptive}" in gt
    balanced = _option_help(distill_mod.build_parser("balanced"), "--cfg-mode")
    assert balanced.endswith("(default: none)")
    assert _option_help(distill_mod.build_parser("fast"), "--lr").endswith("(default: 5e-05)")
    assert _option_help(teacher_mod.build_parser(), "--lr").endswith("(default: 0.0002)")


# the flags of scripts/train_tiny.sh, the first GPU lease's teacher runs and the README's commands, with the configs they mean
TEACHER_RECIPE = [
    "--data", "D", "--manifest", "A", "--cache", "C", "--init", "I", "--run", "R", "--steps", "100000",
    "--stop-after", "1273", "--batch-size", "128", "--lr", "3e-4", "--seed", "21", "--loss-weighting", "truncated_snr",
    "--motion-weight", "1", "--motion-map", "dataset", "--sync-expert", "E", "--sync-weight", "0.1",
    "--sync-target", "audio-hinge", "--sync-max-t", "900", "--mixed-precision", "bf16", "--checkpoint-every", "2000",
    "--max-minutes", "5.95", "--noise-sharing-max", "0.95", "--motion-noise-steps", "100", "--reference-sink",
    "--prediction", "v", "--validate-every", "2500", "--val-data", "H", "--val-clips", "4",
]


def test_the_recipes_flags_parse_to_the_same_configs() -> None:
    p = teacher_mod.build_parser()
    args = p.parse_args(TEACHER_RECIPE)
    assert (args.manifest, args.init, args.prediction, args.vae) == ("A", "I", "v", None)
    assert dataclass_from_args(RunOptions, args) == RunOptions(data="D", cache="C", run="R", stop_after=1273,
                                                               max_minutes=5.95, validate_every=2500, val_data="H",
                                                               val_clips=4)
    assert dataclass_from_args(RunOptions, args).time_limit == pytest.approx(357.0)
    assert dataclass_from_args(TeacherTrainConfig, args) == TeacherTrainConfig(
        loop=LoopConfig(steps=100000, lr=3e-4, mixed_precision=Precision.BF16, checkpoint_every=2000),
        batch_size=128, seed=21, loss_weighting="truncated_snr", motion_weight=1.0, motion_map="dataset",
        sync_expert="E", sync_weight=0.1, sync_target="audio-hinge", sync_max_t=900, noise_sharing_max=0.95,
        motion_noise_steps=100, reference_sink=True)
    # the lease script's MIXED could be accelerate's "no"
    args = p.parse_args([*REQUIRED, "--mixed-precision", "no"])
    assert dataclass_from_args(TeacherTrainConfig, args).loop.mixed_precision is Precision.FP32

    argv = ["--teacher", "T", "--data", "D", "--cache", "C", "--solve-cache", "S", "--steps", "300", "--lr", "1e-4",
            "--motion-weight", "1", "--motion-map", "dataset", "--noise-sharing-max", "1", "--run", "R",
            "--variant", "fast", "--cfg-a-range", "1", "2.5", "--cfg-r-range", "1", "1.5", "--cfg-lr-scale", "10",
            "--batch-size", "8", "--seed", "3", "--motion-noise-steps", "50", "--reference-sink"]
    args = distill_mod.build_parser("fast").parse_args(argv)
    assert (args.teacher, args.solve_cache, args.variant) == ("T", "S", "fast")
    fast = VARIANTS["fast"]
    assert dataclass_from_args(DistillConfig, args, defaults=fast) == dataclasses.replace(
        fast, loop=dataclasses.replace(fast.loop, steps=300, lr=1e-4), motion_weight=1.0, motion_map="dataset",
        noise_sharing_max=1.0, cfg_a_range=(1.0, 2.5), cfg_r_range=(1.0, 1.5), cfg_lr_scale=10.0, batch_size=8,
        seed=3, motion_noise_steps=50, reference_sink=True)
    assert distill_mod._variant_of(argv) == "fast"
    assert distill_mod._variant_of(["--variant", "balanced"]) == "balanced"
    assert distill_mod._variant_of(["--variant=perflow-A"]) == "perflow-A"
    assert distill_mod._variant_of([]) == "fast"


def test_invalid_configs_are_command_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """A config the dataclass refuses is a usage error (exit 2, the dataclass's message), before any loading."""
    for argv, message in ((["--vae", "v", "--sync-weight", "0.1"], "needs a sync_expert"),
                          (["--vae", "v", "--validate-every", "5"], "validate_every needs val_data"),
                          (["--vae", "v", "--p-drop-audio", "0.5", "--p-drop-both", "0.5"], "must be < 1")):
        with pytest.raises(SystemExit) as exit_info:
            teacher_mod.main(REQUIRED + argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    for argv, message in ((["--variant", "balanced", "--cfg-lr-scale", "10"], "--cfg-lr-scale: for CFG-conditioned"),
                          (["--gt-r-peak", "200"], "r_peak < r_dead"),
                          (["--cfg-a-range", "3", "1"], "cfg_a_range must be")):
        with pytest.raises(SystemExit) as exit_info:
            distill_mod.main(["--teacher", "t", *REQUIRED, *argv])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
