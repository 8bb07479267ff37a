"""python -m benchmarks.nfe_latency --preset tiny --device cpu

NFE, latency and throughput of the three samplers on every available backend, side by side in
one run (docs/design.md §4, §7). Variants: ``teacher`` (trailing DDIM, 25 steps x 3 CFG branches = 75
NFE), ``balanced`` student (PeRFlow 6 steps x 3 branches = 18 NFE), ``fast`` CFG-distilled student
(6 steps x 1 = 6 NFE). Backends: ``torch`` (eager), ``torch-compiled`` (torch.compile of every network + CUDA
graphs per denoiser call; CUDA only), ``torch-chunk-graph`` (the whole chunk, steps and decode, one compiled graph
replayed as one CUDA graph; CUDA only), ``onnxruntime`` (engines exported into ``--work-dir`` and reused), ``tensorrt`` (CUDA with
TensorRT installed). A backend that cannot run here is listed with the reason, not raised.

Models are random-init models of the preset (seeded; no downloads): the teacher, the balanced
student (``make_student("none")`` — the teacher's shape *and* weights, so it shares the teacher's
model and exported graphs) and the fast student (``make_student("layer_tokens")``).
``--checkpoint-dir DIR`` uses ``DIR/{teacher,balanced,fast}`` instead. Timing depends on the weight
values only through denormal floats on the CPU, which the run flushes to zero (see
:func:`run_benchmark`); the shapes, and so the work, are the preset's.

Definitions (per row; every chunk is one ``StreamingSession.step`` of the library's live loop):

* chunk latency — wall time of one chunk: its streamed audio features (:class:`AudioFeatureStream`
  on the chunk's segment with context) + ``AvatarPipeline.generate`` (audio tokens, motion features,
  the sampler loop, VAE decode). Median and p90 over the interleaved repetitions.
* NFE — denoiser evaluations per chunk, *counted* at the backend (branches per call, summed).
* latency per NFE — median sampler-loop (denoise) time / NFE.
* fps = chunk frames / median chunk latency; RTF = median chunk latency / chunk audio duration.
* first-frame latency — from the first audio sample of a chunk being available to its first frame
  out: the session's latency floor (the chunk's audio + the feature look-ahead,
  ``StreamingSession.latency_floor``) + the median chunk latency.
* parity — every backend but ``torch`` against ``torch`` eager on the same model: one chunk (a rolling sampler:
  its first frames) from the same portrait, audio and seed, the largest and mean frame difference in 8-bit levels.
* breakdown — per chunk: audio features, conditions (audio tokens + motion features), denoise,
  VAE decode, other (noise, sampler arithmetic, host copies); avatar prepare (VAE encode +
  ReferenceNet, once per avatar) separately. Backend calls are timed through a thin wrapper.
* peak memory — see :class:`benchmarks.machine.MemoryProbe` (process peak RSS on CPU, torch
  allocator peak on CUDA) during the chunk.
* achieved TFLOP/s = FLOPs of one chunk (torch's FLOP counter on the eager model; the same network
  on every backend) / median chunk latency; its share of the peak matmul rate measured in this run.

Interleaving: after warm-up, each repetition times one avatar prepare and one chunk of every row
(variant x backend), the order rotated each repetition, so drift and background load hit all rows
alike; the teacher/fast ratio is also taken pair-wise per repetition.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.machine import CpuShare, MemoryProbe, machine_info, measure_peak_flops
from benchmarks.nfe_backends import STUDIES, BackendFactory, ModelEntry, split_kind, unavailable_reason
from benchmarks.nfe_rows import VARIANTS, Row, chunk_flops, markdown_report, parity, run_summary, summarise
from benchmarks.realtime import realtime_rows
from fada_rt.backends.base import BackendUnavailable
from fada_rt.backends.options import precision_arg
from fada_rt.config import PRESETS, ModelConfig, get_preset
from fada_rt.models.fada import FadaModel
from fada_rt.pipeline import AvatarPipeline
from fada_rt.precision import PRECISIONS, Precision
from fada_rt.sampling import SAMPLERS

RESULTS = Path(__file__).resolve().parent / "results"
BACKEND_NAMES = ("torch", "torch-compiled", "torch-chunk-graph", "onnxruntime", "tensorrt")
#: the variants of the real-time rows: the chunked fast student and the rolling sampler, side by side
REALTIME_VARIANTS = ("fast", "stream")
#: every sampler once; fast-overlap (the fast student, the next chunk's steps beside this one's decode) on request
DEFAULT_VARIANTS = ("teacher", "balanced", "fast", "stream")


# ---- the benchmark -------------------------------------------------------------------------------


def run_benchmark(
    *,
    preset: str = "tiny",
    device: str = "cpu",
    backends: Sequence[str] = BACKEND_NAMES,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    frames: int | None = None,
    repeats: int = 5,
    warmup: int | None = None,
    threads: int | None = None,
    dtype: str | Precision | None = None,
    flush_denormal: bool = True,
    checkpoint_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    seed: int = 0,
    realtime: float = 10.0,
    realtime_rounds: int = 2,
    decoder: str = "vae",
    progress: bool = True,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> dict[str, Any]:
    """Run every (variant, backend) of ``preset`` on ``device``; returns the JSON-ready result.

    ``realtime``: seconds of audio each of the fast and stream variants plays in real time after the chunk table
    (``benchmarks.realtime``; 0 skips), ``realtime_rounds`` times alternating.
    ``flush_denormal`` turns on the CPU's flush-to-zero for the run (restored to off after).
    Random weights drive the samplers' latents far outside their trained range, where attention
    underflows into denormal floats, which x86 computes an order of magnitude slower: without it, a
    random-init teacher measures denormal arithmetic, not the network. Threads inherit the flag from the thread
    that creates them, so it acts fully only when no torch work ran in the process before (as from
    the command line).
    """
    dev, config, run_dtype = _check_args(preset=preset, device=device, backends=backends, variants=variants,
                                         frames=frames, repeats=repeats, warmup=warmup, threads=threads, dtype=dtype)
    warmup = warmup if warmup is not None else (2 if dev.type == "cuda" else 1)
    if threads is not None:
        torch.set_num_threads(threads)  # asked for on the command line; torch's default otherwise
    settings = {
        "preset": preset, "device": str(dev), "dtype": Precision.parse(run_dtype).value,
        "chunk_frames": config.num_frames, "motion_frames": config.motion_frames, "resolution": config.resolution,
        "repeats": repeats, "warmup": warmup, "seed": seed, "variants": list(variants), "backends": list(backends),
        "threads": {"torch": torch.get_num_threads(), "onnxruntime_intra_op": threads or torch.get_num_threads(),
                    "flag": threads},
        "flush_denormal": flush_denormal, "realtime_s": float(realtime), "realtime_rounds": realtime_rounds,
        "decoder": str(decoder),
        "weights": f"checkpoints in {checkpoint_dir}" if checkpoint_dir is not None else f"random init (seed {seed})",
        "work_dir": str(Path(work_dir) if work_dir is not None else Path(tempfile.gettempdir()) / "fada-rt-nfe-latency"),
    }
    if flush_denormal:
        torch.set_flush_denormal(True)
    try:
        return _run(config, settings, dev=dev, dtype=run_dtype, checkpoint_dir=checkpoint_dir, progress=progress,
                    log=log)
    finally:
        if flush_denormal:
            torch.set_flush_denormal(False)


def _run(config: ModelConfig, settings: dict[str, Any], *, dev: torch.device, dtype: torch.dtype,
         checkpoint_dir: str | Path | None, progress: bool, log: Callable[[str], None]) -> dict[str, Any]:
    machine = machine_info(device=dev)
    backends, variants, seed = settings["backends"], settings["variants"], settings["seed"]
    warmup, repeats = settings["warmup"], settings["repeats"]
    unavailable = {k: r for k in backends if (r := unavailable_reason(k, device=dev, dtype=dtype)) is not None}
    if settings["decoder"] != "vae":  # engines hold the VAE decoder they were exported with
        unavailable.update({k: "the tiny decoder runs on the torch backends" for k in backends
                            if not k.startswith("torch") and k not in unavailable})
    kinds = [k for k in backends if k not in unavailable]
    if not kinds:
        raise BackendUnavailable("none of the asked-for backends can run here: " +
                                 "; ".join(f"{k}: {r}" for k, r in unavailable.items()))
    models = build_models(config, variants=variants, seed=seed, checkpoint_dir=checkpoint_dir)
    factory = BackendFactory(device=dev, dtype=dtype, work_dir=Path(settings["work_dir"]),
                             ort_threads=settings["threads"]["onnxruntime_intra_op"], log=log,
                             decoder=settings["decoder"])
    rng = np.random.default_rng(seed)
    samples = ((warmup + repeats + 1) * config.num_frames + config.audio.fps) * config.audio.samples_per_frame
    audio = (rng.standard_normal(samples) * 0.1).astype(np.float32)  # + 1 s: more than any look-ahead
    rows = []
    # engine backends first: exporting reads fp32 CPU weights, the torch backends then move them
    skipped = []
    for kind in sorted(kinds, key=lambda k: k.startswith("torch")):
        for name in variants:
            if SAMPLERS[VARIANTS[name].sampler].rolling and not kind.startswith("torch"):
                skipped.append({"backend": kind, "variant": name, "reason": "the rolling sampler keeps 1..N frames in "
                                "flight; exported graphs run a static F frames (torch only)"})
                continue
            backend = factory.get(kind, models[name], VARIANTS[name].role)
            rows.append(Row(VARIANTS[name], kind, backend, image=_image(rng, config), audio=audio, seed=seed))
    rows.sort(key=lambda r: (variants.index(r.variant.name), backends.index(r.backend_name)))

    memory = MemoryProbe(dev)
    for row in tqdm(rows, desc="warm-up", unit="row", disable=not progress):
        row.prepare(_image(rng, config))
        for _ in range(warmup):
            row.chunk(memory)
    flops = {name: chunk_flops(factory.eager(models[name]), VARIANTS[name], image=_image(rng, config),
                               audio=audio, seed=seed) for name in variants}
    peaks = [measure_peak_flops(device=dev, dtype=dtype)]
    contention = CpuShare()  # how much of the CPU other processes took while the rows were timed
    contention.start()
    for r in tqdm(range(repeats), desc="repetitions", unit="rep", disable=not progress):
        shift = r % len(rows)  # rotate the order: no row always runs first
        for row in rows[shift:] + rows[:shift]:
            row.samples_prepare.append(row.prepare(_image(rng, config)))
            row.samples.append(row.chunk(memory))
    cpu_during_timing = contention.stop()
    peaks.append(measure_peak_flops(device=dev, dtype=dtype))
    peak = max(peaks, key=lambda p: p["flops_per_s"])

    settings = {**settings, "memory_method": memory.method}
    out_rows = [summarise(row, config=config, settings=settings, flops=flops[row.variant.name], peak=peak)
                for row in rows]
    for row, out in zip(rows, out_rows, strict=True):  # every other backend against torch eager, one chunk each
        if row.backend_name != "torch":
            out["parity_vs_eager"] = parity(factory.eager(models[row.variant.name]), row.backend.inner, row.variant,
                                            image=_image(np.random.default_rng(seed), config), audio=audio, seed=seed)
    live = [n for n in variants if n in REALTIME_VARIANTS] if "torch" in kinds and settings["realtime_s"] > 0 else []
    realtime = []
    if live:  # after the chunk table: nothing else runs while the clock is real
        speech = (rng.standard_normal(round(settings["realtime_s"] * config.audio.sample_rate)) * 0.1).astype(np.float32)
        pipelines = {n: AvatarPipeline(factory.get("torch", models[n], VARIANTS[n].role), sampler=VARIANTS[n].sampler)
                     for n in live}
        log(f"real time: {', '.join(live)}, {settings['realtime_rounds']} rounds of {settings['realtime_s']:g} s each")
        realtime = realtime_rows(pipelines, image=_image(rng, config), audio=speech,
                                 rounds=settings["realtime_rounds"], seed=seed)
    return {
        "benchmark": "nfe_latency",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "machine": {**machine, "load_average_end": machine_info(device=dev)["load_average_1_5_15"],
                    "cpu_during_timing": cpu_during_timing},
        "peak_flops": peak,
        "rows": out_rows,
        "realtime": realtime,
        "summary": run_summary(out_rows, preset=settings["preset"], fps=config.audio.fps, realtime=realtime),
        "unavailable": [{"backend": k, "reason": r} for k, r in unavailable.items()] + skipped,
    }


def _check_args(*, preset: str, device: str, backends: Sequence[str], variants: Sequence[str], frames: int | None,
                repeats: int, warmup: int | None, threads: int | None, dtype: str | Precision | None
                ) -> tuple[torch.device, ModelConfig, torch.dtype]:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    for b in backends:
        split_kind(b)  # a study's spelling (TORCH_KIND+STUDY)
    bad = [b for b in backends if split_kind(b)[0] not in BACKEND_NAMES] + [v for v in variants if v not in VARIANTS]
    if bad or not backends or not variants:
        raise ValueError(f"backends must be among {BACKEND_NAMES} (a torch one may carry +STUDY, STUDY in {STUDIES}) "
                         f"and variants among {tuple(VARIANTS)}; got backends={list(backends)}, variants={list(variants)}")
    if len(set(backends)) != len(backends) or len(set(variants)) != len(variants):
        raise ValueError("list each backend and variant once")
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda[:N], got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch sees no CUDA GPU (torch {torch.__version__}); use --device cpu")
    if repeats < 1 or (warmup is not None and warmup < 0) or (threads is not None and threads < 1):
        raise ValueError(f"need --repeats >= 1, --warmup >= 0, --threads >= 1; got {repeats}, {warmup}, {threads}")
    config = get_preset(preset)
    if frames is not None:
        if frames < 1:
            raise ValueError(f"--frames (the chunk length F) must be >= 1, got {frames}")
        config = config.replace(num_frames=frames)  # validated by ModelConfig
    default = Precision.FP16 if dev.type == "cuda" else Precision.FP32
    run_dtype = Precision.parse(dtype if dtype is not None else default).dtype
    return dev, config, run_dtype


def _image(rng: np.random.Generator, config: ModelConfig) -> np.ndarray:
    return rng.integers(0, 256, (config.resolution, config.resolution, 3), dtype=np.uint8)


# ---- models and backends -------------------------------------------------------------------------


def build_models(config: ModelConfig, *, variants: Sequence[str], seed: int,
                 checkpoint_dir: str | Path | None = None) -> dict[str, ModelEntry]:
    """One model per variant: random init (seeded; the balanced student shares the teacher's weights,
    as ``make_student("none")`` copies them) or ``checkpoint_dir/<variant>`` checkpoints."""
    if checkpoint_dir is not None:
        from fada_rt.checkpoint import load_model

        entries = {}
        for name in variants:
            path = Path(checkpoint_dir) / VARIANTS[name].model
            model, meta = load_model(path, preset=config.preset, role=VARIANTS[name].role)
            if model.config.num_frames != config.num_frames:
                raise ValueError(f"{path} has chunk length F={model.config.num_frames}; drop --frames or pass "
                                 f"--frames {model.config.num_frames}")
            entries[name] = ModelEntry(model, meta["role"], path)
        return entries
    with torch.random.fork_rng(devices=[]):  # the seed stays local to the benchmark
        torch.manual_seed(seed)
        teacher = FadaModel(config).eval()
        # the fast student's shape: fast, fast-overlap and the rolling sampler's
        students = {n for n in variants if VARIANTS[n].cfg_mode == "layer_tokens"}
        fast = teacher.make_student(VARIANTS["fast"].cfg_mode).eval() if students else None
    shared = ModelEntry(teacher, "teacher" if "balanced" not in variants else None, None)
    return {name: (ModelEntry(fast, "student", None) if name in students else shared) for name in variants}


# ---- CLI -----------------------------------------------------------------------------------------


def _backend_kind(value: str) -> str:
    """argparse ``type=`` of --backend: a backend of BACKEND_NAMES, a torch one optionally + a study."""
    try:
        base, _ = split_kind(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if base not in BACKEND_NAMES:
        raise argparse.ArgumentTypeError(f"unknown backend {value!r}; choose among {BACKEND_NAMES} (+STUDY for torch)")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.nfe_latency", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                   help="model preset: tiny on CPU, sd15 on GPU (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: %(default)s)")
    p.add_argument("--backend", nargs="+", default=list(BACKEND_NAMES), metavar="BACKEND", type=_backend_kind,
                   help=f"backends to run, of {', '.join(BACKEND_NAMES)}; a torch one + a study ({', '.join(STUDIES)}), "
                        "e.g. torch-compiled+channels-last, is a row beside it (default: all plain ones; unavailable "
                        "ones are reported)")
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS), metavar="VARIANT",
                   help=f"variants to run, of {', '.join(VARIANTS)} (default: %(default)s)")
    p.add_argument("--frames", type=int, default=None,
                   help="chunk length F in frames (default: the preset's, " +
                        " / ".join(f"{k} {get_preset(k).num_frames}" for k in sorted(PRESETS)) + ")")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed chunks per row, interleaved across rows (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=None, help="untimed chunks per row first (default 1 on CPU, 2 on CUDA)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch and onnxruntime intra-op threads (default: torch's default, the same for onnxruntime)")
    p.add_argument("--dtype", type=precision_arg, choices=PRECISIONS, default=None,
                   metavar="{" + ",".join(PRECISIONS) + "}",
                   help=f"network precision (default: {Precision.FP32} on CPU, {Precision.FP16} on CUDA)")
    p.add_argument("--keep-denormals", action="store_true",
                   help="leave the CPU's denormal arithmetic on (default: flush to zero, see run_benchmark)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="folder with a checkpoint per variant (teacher/, balanced/, fast/ also for fast-overlap, stream/) (default: random "
                        "init, no downloads)")
    p.add_argument("--work-dir", default=None,
                   help="where exported engines are cached (default: $TMPDIR/fada-rt-nfe-latency; delete to re-export)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random weights, portraits, audio and noise (default: %(default)s)")
    p.add_argument("--realtime", type=float, default=10.0, metavar="SECONDS",
                   help="seconds of audio the fast and stream variants each play in real time on torch, for first-frame "
                        "and audio-to-frame latency (benchmarks.realtime; 0: skip) (default: %(default)s)")
    p.add_argument("--realtime-rounds", type=int, default=2, help="alternating real-time rounds per variant "
                   "(default: %(default)s)")
    p.add_argument("--decoder", default="vae", metavar="vae|tiny|DIR",
                   help="the torch backends' latents-to-frames: the VAE's decoder or a tiny one (random init: a random "
                        "tiny decoder of the preset's shape) (default: %(default)s)")
    p.add_argument("--out", default=None,
                   help="JSON file to write (default: benchmarks/results/nfe_latency_<preset>_<device>.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run_benchmark(
            preset=args.preset, device=args.device, backends=args.backend, variants=args.variants, frames=args.frames,
            repeats=args.repeats, warmup=args.warmup, threads=args.threads, dtype=args.dtype,
            flush_denormal=not args.keep_denormals, checkpoint_dir=args.checkpoint_dir, work_dir=args.work_dir,
            seed=args.seed, realtime=args.realtime, realtime_rounds=args.realtime_rounds, decoder=args.decoder,
            progress=not args.no_progress)
    except (ValueError, BackendUnavailable, FileNotFoundError) as err:
        print(f"nfe_latency: {err}", file=sys.stderr)
        return 2
    result["command"] = ["python", "-m", "benchmarks.nfe_latency", *(sys.argv[1:] if argv is None else argv)]
    out = Path(args.out) if args.out else RESULTS / f"nfe_latency_{args.preset}_{torch.device(args.device).type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_report(result))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
