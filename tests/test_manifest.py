"""Engine manifests: round trip, and refusals (with the rebuild command) of stale or foreign engines."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from fada_rt.backends.base import BackendUnavailable
from fada_rt.backends.graphs import graph_specs
from fada_rt.backends.manifest import (
    MANIFEST_NAME,
    EngineError,
    GpuInfo,
    GraphEntry,
    Manifest,
    PlanEntry,
    TensorRTEntry,
    check_graph_files,
    check_tensorrt,
    engine_precision,
    read_manifest,
    rebuild_command,
    sha256_file,
    timing_cache_name,
    write_manifest,
)
from fada_rt.config import ModelConfig, get_preset
from fada_rt.precision import Precision

H100 = GpuInfo("NVIDIA H100 80GB HBM3", "9.0")
NAMES = ("denoiser", "reference_encoder", "vae_encoder", "vae_decoder", "audio_proj")


def _engine_dir(tmp_path: Path, *, tensorrt: bool = True) -> tuple[Path, Manifest]:
    """A directory with fake graph/plan files and a manifest that matches them exactly."""
    config = get_preset("tiny").with_cfg_mode("layer_tokens")
    specs = graph_specs(config)
    folder = tmp_path / "engines" / "tiny fast"  # a space: the rebuild command must quote it
    folder.mkdir(parents=True)
    graphs, plans = {}, {}
    for name, spec in specs.items():
        (folder / f"{name}.onnx").write_bytes(f"onnx {name}".encode())
        (folder / f"{name}.plan").write_bytes(f"plan {name}".encode())
        onnx_sha = sha256_file(folder / f"{name}.onnx")
        graphs[name] = GraphEntry(spec, f"{name}.onnx", {f"{name}.onnx": onnx_sha}, {})
        plans[name] = PlanEntry(f"{name}.plan", sha256_file(folder / f"{name}.plan"), onnx_sha, {})
    trt = TensorRTEntry("10.9.0.34", H100, plans, str(tmp_path / "cache")) if tensorrt else None
    manifest = Manifest(checkpoint="runs/student", role="student", model=config.to_dict(), precision="fp16",
                        opset=17, graphs=graphs, tensorrt=trt)
    write_manifest(manifest, folder)
    return folder, manifest


def _expected_command(folder: Path) -> str:
    return f"python -m fada_rt.export --checkpoint runs/student --out {shlex.quote(str(folder))} --precision fp16 --tensorrt"


def test_round_trip_and_strict_keys(tmp_path: Path) -> None:
    folder, manifest = _engine_dir(tmp_path)
    loaded = read_manifest(folder)
    assert loaded.to_dict() == json.loads(json.dumps(manifest.to_dict()))
    assert ModelConfig.from_dict(loaded.model) == get_preset("tiny").with_cfg_mode("layer_tokens")
    assert loaded.graphs == manifest.graphs and loaded.tensorrt == manifest.tensorrt
    assert loaded.graphs["denoiser"].spec.input("cfg").shape == (1, 2)
    raw = json.loads((folder / MANIFEST_NAME).read_text())
    raw["surprise"] = 1
    (folder / MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(EngineError, match=r"unknown keys \['surprise'\]"):
        read_manifest(folder)


def test_matching_engine_passes_every_check(tmp_path: Path) -> None:
    folder, manifest = _engine_dir(tmp_path)
    check_graph_files(manifest, folder, NAMES)
    check_tensorrt(manifest, folder, names=NAMES, version="10.9.0.34", gpu=H100)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("onnx_hash", r"denoiser.plan was built from another ONNX"),
        ("version", r"built with TensorRT 10.9.0.34, this machine has TensorRT 10.13.0"),
        ("gpu", r"built for GPU 'NVIDIA H100 80GB HBM3' \(compute capability 9.0\), this machine has "
                r"'NVIDIA L4' \(compute capability 8.9\)"),
        ("plan_file", r"vae_decoder.plan changed since it was built"),
    ],
)
def test_mismatched_tensorrt_engine_is_refused_with_rebuild_command(tmp_path: Path, change: str, message: str
                                                                    ) -> None:
    folder, manifest = _engine_dir(tmp_path)
    version, gpu = "10.9.0.34", H100
    if change == "onnx_hash":
        plans = dict(manifest.tensorrt.plans)
        plans["denoiser"] = PlanEntry("denoiser.plan", plans["denoiser"].sha256, "0" * 64, {})
        manifest = Manifest(**{**vars(manifest), "tensorrt": TensorRTEntry(
            manifest.tensorrt.version, H100, plans, manifest.tensorrt.timing_cache)})
        write_manifest(manifest, folder)
        manifest = read_manifest(folder)
    elif change == "version":
        version = "10.13.0"
    elif change == "gpu":
        gpu = GpuInfo("NVIDIA L4", "8.9")
    else:
        (folder / "vae_decoder.plan").write_bytes(b"another plan")
    with pytest.raises(EngineError, match=message) as info:
        check_tensorrt(manifest, folder, names=NAMES, version=version, gpu=gpu)
    assert isinstance(info.value, BackendUnavailable)
    assert str(info.value).endswith("; rebuild it with: " + _expected_command(folder))
    assert "\n" not in str(info.value)  # one line: the CLIs print it as one error line


def test_changed_or_missing_onnx_is_refused(tmp_path: Path) -> None:
    folder, manifest = _engine_dir(tmp_path)
    (folder / "audio_proj.onnx").write_bytes(b"re-exported")
    (folder / "vae_encoder.onnx").unlink()
    with pytest.raises(EngineError) as info:
        check_graph_files(manifest, folder, NAMES)
    text = str(info.value)
    assert "audio_proj.onnx changed since export" in text and "vae_encoder.onnx is missing" in text
    assert text.endswith(_expected_command(folder))


def test_engine_without_tensorrt_or_without_a_graph(tmp_path: Path) -> None:
    folder, manifest = _engine_dir(tmp_path, tensorrt=False)
    with pytest.raises(EngineError, match=r"no TensorRT plans \(exported without --tensorrt\)") as info:
        check_tensorrt(manifest, folder, names=NAMES, version="10.9.0.34", gpu=H100)
    assert str(info.value).endswith(_expected_command(folder))
    # A --graphs subset cannot serve a runtime: the rebuild command drops the subset.
    subset = Manifest(**{**vars(manifest), "graphs": {"denoiser": manifest.graphs["denoiser"]},
                         "exported_graphs": ("denoiser",)})
    assert "--graphs denoiser" in subset.rebuild_command(folder)
    with pytest.raises(EngineError, match=r"graphs \['reference_encoder', 'vae_encoder', 'vae_decoder', "
                                          r"'audio_proj'\] were not exported") as info:
        check_graph_files(subset, folder, NAMES)
    assert "--graphs" not in str(info.value)


def test_missing_or_unfinished_directory(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=r"does not exist; export one with: python -m fada_rt.export --checkpoint"):
        read_manifest(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(EngineError, match=r"has no manifest\.json: the export did not finish or its parity checks"):
        read_manifest(tmp_path / "half")
    (tmp_path / "half" / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(EngineError, match="is not a valid engine manifest"):
        read_manifest(tmp_path / "half")


def test_rebuild_command_and_timing_cache_key() -> None:
    cmd = rebuild_command(checkpoint="my ckpt", out="engines/x", graphs=("denoiser", "audio_proj"),
                          precision="fp32", tensorrt=False, denoiser_batch=3)
    assert shlex.split(cmd) == ["python", "-m", "fada_rt.export", "--checkpoint", "my ckpt", "--out", "engines/x",
                                "--graphs", "denoiser", "audio_proj", "--precision", "fp32", "--denoiser-batch", "3"]
    assert timing_cache_name("10.9.0.34", H100) == "timing-trt10.9.0.34-nvidia-h100-80gb-hbm3-sm90.cache"
    keys = {timing_cache_name(v, g) for v in ("10.9.0.34", "11.0.0") for g in (H100, GpuInfo("NVIDIA L4", "8.9"))}
    assert len(keys) == 4  # another TensorRT or GPU never reuses a cache


def test_engine_precisions_are_fp32_and_fp16(tmp_path: Path) -> None:
    """One precision vocabulary: torch's spellings are read as fp32/fp16, bf16 is refused with the reason,
    and manifests on disk say "fp32" / "fp16"."""
    assert engine_precision("float16") is Precision.FP16 and engine_precision(Precision.FP32) is Precision.FP32
    with pytest.raises(ValueError, match="engines are fp32 or fp16, not bf16"):
        engine_precision("bf16")
    folder, manifest = _engine_dir(tmp_path, tensorrt=False)
    assert json.loads((folder / MANIFEST_NAME).read_text())["precision"] == "fp16" == read_manifest(folder).precision
    data = manifest.to_dict()
    for value, ok in (("fp32", True), ("float32", True), ("bf16", False), ("int8", False)):
        if ok:
            assert Manifest.from_dict({**data, "precision": value}).precision == "fp32"
        else:
            with pytest.raises(ValueError, match="engines are fp32 or fp16"):
                Manifest.from_dict({**data, "precision": value})


def test_export_cli_precision_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from fada_rt.export.__main__ import build_parser  # needs neither onnx nor onnxruntime

    parser = build_parser()
    base = ["--checkpoint", "c", "--out", "o"]
    assert parser.parse_args(base).precision is Precision.FP32
    assert parser.parse_args([*base, "--precision", "float16"]).precision is Precision.FP16
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--precision", "bf16"])
    assert "engines are fp32 or fp16, not bf16" in capsys.readouterr().err
