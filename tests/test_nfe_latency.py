"""benchmarks.nfe_latency at its smallest size, and the instruments it measures with.

No timing is asserted: the checks are the JSON contract, the counted NFE column, the arithmetic
between the reported columns, the FLOP counts against known values and unavailable backends being
reported instead of raised.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.machine import CpuShare, MemoryProbe, count_flops
from benchmarks.nfe_latency import main, run_benchmark
from fada_rt.backends.base import BackendUnavailable

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 2
ROW_FIELDS = ("variant", "backend", "preset", "nfe", "chunk_latency_median_s", "chunk_latency_p90_s", "fps", "rtf",
              "latency_per_nfe_ms", "first_frame_latency_s", "breakdown_median_s", "prepare_median_s",
              "peak_memory_bytes", "chunk_flops", "achieved_tflops", "peak_share")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One CLI run in its own process (as a user runs it): tiny, F=2, one repetition, torch eager,
    plus two backends that cannot run on a CPU machine; 1.5 s of real time per fast / stream row."""
    out = tmp_path_factory.mktemp("nfe") / "result.json"
    cmd = [sys.executable, "-m", "benchmarks.nfe_latency", "--preset", "tiny", "--device", "cpu",
           "--frames", str(FRAMES), "--repeats", "1", "--warmup", "0", "--backend", "torch", "torch-compiled", "tensorrt",
           "--realtime", "1.5", "--realtime-rounds", "1", "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.slow
def test_json_rows_have_the_fields_and_the_counted_nfe(run):
    result, _ = run
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"teacher", "balanced", "fast", "stream"}
    for r in rows.values():
        assert all(k in r for k in ROW_FIELDS), sorted(set(ROW_FIELDS) - set(r))
        frames = 1 if r["variant"] == "stream" else FRAMES  # a rolling step: one call, one frame out
        assert (r["backend"], r["preset"], r["chunk_frames"]) == ("torch", "tiny", frames)
    # NFE is counted at the backend (branches x frames per denoiser call, summed over the step, per frame out)
    assert {v: r["nfe"] for v, r in rows.items()} == {"teacher": 75, "balanced": 18, "fast": 6, "stream": 4}
    assert result["summary"]["nfe_ratio_teacher_fast"] == 12.5
    assert set(result["summary"]["teacher_fast_ratio"]) == {"torch"}


@pytest.mark.slow
def test_reported_columns_follow_their_definitions(run):
    result, _ = run
    audio_s = FRAMES / 25
    for r in result["rows"]:
        rolling = r["variant"] == "stream"
        # a rolling first frame: one call per stage, after 1 frame of look-ahead (SamplerSpec.lookahead)
        frames, calls, ahead = (1, 4, 1) if rolling else (FRAMES, 1, 2)
        floor = (frames * 640 + ahead * 640 + 120) / 16000  # step audio + look-ahead (frames + the STFT's 120 samples)
        med = r["chunk_latency_median_s"]
        assert r["fps"] == pytest.approx(frames / med)
        assert r["rtf"] == pytest.approx(med / (audio_s if not rolling else 1 / 25))
        assert r["latency_floor_s"] == pytest.approx(floor)
        assert r["first_frame_latency_s"] == pytest.approx(floor + calls * med)
        assert r["chunk_latency_p90_s"] >= med >= r["chunk_latency_min_s"] > 0
        parts = r["breakdown_median_s"]
        assert set(parts) == {"audio_features", "conditions", "denoise", "vae_decode", "other"}
        assert all(v >= 0 for v in parts.values())
        assert parts["denoise"] <= med  # one repetition: the spans lie inside the chunk's wall time
        assert r["latency_per_nfe_ms"] == pytest.approx(parts["denoise"] / r["nfe"] * 1000)
        assert r["peak_memory_bytes"] > 50 * 2**20  # a python process with torch and the models loaded
        assert 0 <= r["chunk_memory_bytes"] < r["peak_memory_bytes"]
    flops = {r["variant"]: r["flops_breakdown"] for r in result["rows"]}
    # teacher and balanced are the same network with 3 branches per call: 25 vs 6 calls
    assert flops["teacher"]["denoise"] * 6 == flops["balanced"]["denoise"] * 25
    assert flops["teacher"]["vae_decode"] == flops["fast"]["vae_decode"] > 0
    assert flops["stream"]["vae_decode"] * FRAMES == flops["fast"]["vae_decode"]  # one frame decoded per call


@pytest.mark.slow
def test_realtime_rows_time_the_chunked_and_rolling_samplers_side_by_side(run):
    result, stdout = run
    live = {r["variant"]: r for r in result["realtime"]}
    assert set(live) == {"fast", "stream"}
    for r in live.values():
        assert r["frames"] == 38 == len(r["runs"]) * 38 and r["audio_s"] == 1.5  # ceil(1.5 s x 25 fps)
        # nothing comes out before its audio (and look-ahead) was spoken
        assert r["first_frame_s"] >= r["latency_floor_s"] and r["latency_median_s"] >= 0.5 / 25
        assert r["latency_p90_s"] >= r["latency_median_s"] and r["latency_max_s"] >= r["latency_p90_s"]
    assert live["stream"]["latency_floor_s"] == pytest.approx((640 + 640 + 120) / 16000)
    names = {t["name"] for t in result["summary"]["targets"]}
    assert "stream first frame in real time (s)" in names
    assert "| stream | torch |" in stdout and "audio-to-frame" in stdout


@pytest.mark.slow
def test_unavailable_backends_are_reported_with_a_reason(run):
    result, stdout = run
    reasons = {u["backend"]: u["reason"] for u in result["unavailable"]}
    assert set(reasons) == {"torch-compiled", "tensorrt"}
    assert "CUDA" in reasons["tensorrt"] and "CUDA" in reasons["torch-compiled"]
    machine = result["machine"]
    assert machine["cores_logical"] >= 1 and machine["cpu"] and machine["gpu"] is None
    assert machine["libraries"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert result["settings"]["flush_denormal"] is True
    cpu = machine["cpu_during_timing"]
    assert 0 < cpu["own_share"] <= 1 and 0 <= cpu["others_share"] <= 1 and cpu["seconds"] > 0
    assert "| teacher | torch | 75 |" in stdout and "| fast | torch | 6 |" in stdout
    assert "tensorrt: not run" in stdout


def test_nothing_runnable_is_a_clear_error():
    with pytest.raises(BackendUnavailable, match="tensorrt: TensorRT needs a CUDA GPU"):
        run_benchmark(preset="tiny", device="cpu", backends=["tensorrt"], repeats=1, progress=False)


def test_bad_flags_are_clear_errors(capsys):
    assert main(["--frames", "0", "--backend", "torch"]) == 2
    assert "--frames (the chunk length F) must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--backend", "jax"])


def test_flop_counts_match_the_formulas():
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    assert count_flops(lambda: a @ b)[0] == 2 * 64 * 32 * 16
    q, k = torch.randn(2, 4, 10, 8), torch.randn(2, 4, 12, 8)  # CPU attention, counted by the custom rule
    mask = torch.ones(10, 12, dtype=torch.bool)
    flops, _ = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, k, attn_mask=mask))
    assert flops == 2 * (2 * 2 * 4 * 10 * 12 * 8)  # QK^T and PV


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS reset needs Linux /proc")
def test_memory_probe_sees_a_transient_allocation():
    probe = MemoryProbe(torch.device("cpu"))
    probe.begin()
    base = probe.peak()
    block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
    del block
    grown, growth = probe.peak(), probe.growth()
    probe.begin()  # the high-water mark resets to the current resident size
    assert grown - base >= 190 * 2**20 and growth >= 190 * 2**20
    assert probe.peak() < grown - 150 * 2**20 and probe.growth() < 10 * 2**20


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="CPU accounting reads Linux /proc/stat")
def test_cpu_share_counts_this_process():
    share = CpuShare()
    share.start()
    end = time.process_time() + 0.3
    while time.process_time() < end:  # 0.3 s of this process's CPU time
        pass
    cpu = share.stop()
    assert cpu["own_share"] * cpu["seconds"] * len(os.sched_getaffinity(0)) == pytest.approx(0.3, abs=0.05)
    assert 0 <= cpu["others_share"] <= 1 - cpu["own_share"] + 1e-6


def test_study_rows_run_beside_their_backend_with_parity_against_eager():
    """A torch kind + a study (issue 27's channels-last / SDPA kernels) is a row of its own, built on its own copy of
    the model, with its parity against torch eager; CUDA-only kinds and kernels are reported, not raised."""
    result = run_benchmark(preset="tiny", device="cpu", frames=FRAMES, repeats=1, warmup=0, variants=["fast"],
                           backends=["torch", "torch+channels-last", "torch+sdpa-math", "torch+sdpa-flash",
                                     "torch+fp8", "torch-chunk-graph"], realtime=0, progress=False, log=lambda s: None)
    rows = {r["backend"]: r for r in result["rows"]}
    assert set(rows) == {"torch", "torch+channels-last", "torch+sdpa-math"}
    assert "parity_vs_eager" not in rows["torch"]
    for kind in ("torch+channels-last", "torch+sdpa-math"):
        parity = rows[kind]["parity_vs_eager"]
        assert parity["frames"] == FRAMES and parity["max_levels"] <= 1, (kind, parity)  # the same network
    reasons = {u["backend"]: u["reason"] for u in result["unavailable"]}
    assert all("CUDA" in reasons[k] for k in ("torch+sdpa-flash", "torch+fp8", "torch-chunk-graph"))
    with pytest.raises(ValueError, match="TORCH_KIND\\+STUDY"):
        run_benchmark(preset="tiny", backends=["onnxruntime+channels-last"], progress=False)


def test_overlapped_decode_is_a_row_of_the_fast_student():
    """fast-overlap runs the fast student's model with StreamingSession(overlap_decode=True): a row beside fast with
    the same counted NFE per frame (its first, double step is filled before timing)."""
    result = run_benchmark(preset="tiny", device="cpu", frames=FRAMES, repeats=1, warmup=0,
                           variants=["fast", "fast-overlap"], backends=["torch"], realtime=0, progress=False,
                           log=lambda s: None)
    rows = {r["variant"]: r for r in result["rows"]}
    assert rows["fast"]["nfe"] == rows["fast-overlap"]["nfe"] == 6
    assert rows["fast-overlap"]["chunk_frames"] == FRAMES
