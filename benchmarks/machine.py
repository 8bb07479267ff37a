"""Measuring instruments for the speed benchmarks: the machine, clocks, memory and FLOPs.

* :func:`machine_info` — CPU model and cores, load average, memory, GPU, library versions: what a
  timing needs next to it to be read by someone else; :class:`CpuShare` — how much of the CPU
  other processes took meanwhile (a shared machine).
* :class:`SpanTimer` — named time spans (``with timer.span("decode"): ...``) summed per category;
  host clock on CPU, CUDA events on a GPU (no synchronisation inside the timed code: the events
  are resolved once, after the chunk).
* :class:`MemoryProbe` — peak memory of a stretch of work: on Linux CPU the process's peak resident
  set (``VmHWM``, reset through ``/proc/self/clear_refs``), on CUDA ``torch.cuda.max_memory_allocated``.
* :class:`FlopProbe` / :func:`count_flops` — FLOPs by ``torch.utils.flop_counter`` (matmuls,
  convolutions, attention; elementwise work is not counted, as usual for achieved-FLOP/s figures).
* :func:`measure_peak_flops` — the achievable matmul rate of this device in a dtype, measured in
  the same run (docs/design.md §7 reports achieved FLOP/s against a *measured* peak).
* :class:`InstrumentedBackend` — a ``fada_rt`` Backend seen through one of these probes, call by
  call, plus an NFE count; the library code is not changed.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

LIBRARIES = ("torch", "numpy", "diffusers", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu",
             "tensorrt", "cuda-python", "psutil")


# ---- the machine ---------------------------------------------------------------------------------


def machine_info(*, device: torch.device) -> dict[str, Any]:
    """CPU, cores, memory, load, GPU (when ``device`` is CUDA) and library versions."""
    try:
        import psutil
    except ImportError as err:
        raise ImportError("the benchmarks need psutil for core counts and memory: pip install -e '.[dev]'") from err

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_total_bytes": psutil.virtual_memory().total,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "libraries": library_versions(),
        "gpu": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                       "memory_bytes": props.total_memory, "multiprocessors": props.multi_processor_count,
                       "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    return info


def cpu_model() -> str:
    """The CPU's marketing name (/proc/cpuinfo on Linux, else what platform reports)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def library_versions(names: Sequence[str] = LIBRARIES) -> dict[str, str | None]:
    """Installed distribution versions; None for one that is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


class CpuShare:
    """How busy the machine was with *other* work between :meth:`start` and :meth:`stop` (Linux).

    From ``/proc/stat`` (all CPUs) and this process's own CPU time: a benchmark on a shared machine
    reports how much of the CPU other processes took meanwhile (and the hypervisor's steal), so a
    reader can tell a slow machine from a contended one.
    """

    def start(self) -> None:
        self._start = (_proc_stat(), os.times())

    def stop(self) -> dict[str, float]:
        (stat0, own0), stat1, own1 = self._start, _proc_stat(), os.times()
        hz = os.sysconf("SC_CLK_TCK")
        delta = [b - a for a, b in zip(stat0, stat1)]
        total = sum(delta) / hz  # CPU-seconds of all cores
        idle = (delta[3] + delta[4]) / hz  # idle + iowait
        steal = delta[7] / hz if len(delta) > 7 else 0.0
        own = (own1.user + own1.system) - (own0.user + own0.system)
        # the process's clock and /proc/stat's tick in different steps: on an otherwise idle machine the
        # process can read a few ticks more than all cores together, hence the clamp
        return {"seconds": total / max(1, len(os.sched_getaffinity(0))), "own_share": min(1.0, own / total),
                "others_share": max(0.0, (total - idle - steal - own) / total), "steal_share": steal / total}


def _proc_stat() -> list[int]:
    """The aggregate ``cpu`` line of /proc/stat: user nice system idle iowait irq softirq steal ..."""
    line = Path("/proc/stat").read_text().splitlines()[0].split()
    if line[0] != "cpu":
        raise RuntimeError("/proc/stat does not start with the aggregate cpu line")
    return [int(x) for x in line[1:9]]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- time ----------------------------------------------------------------------------------------


class SpanTimer:
    """Seconds per category over named spans; spans of one category add up.

    On CUDA each span records a pair of events on the current stream, so the timed code runs
    unsynchronised; :meth:`totals` synchronises once and resolves them.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self._spans: dict[str, list[Any]] = defaultdict(list)

    def reset(self) -> None:
        self._spans = defaultdict(list)

    @contextlib.contextmanager
    def span(self, category: str) -> Iterator[None]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._spans[category].append((start, end))
        else:
            t0 = time.perf_counter()
            yield
            self._spans[category].append(time.perf_counter() - t0)

    def denoiser(self, bound: Any) -> Any:
        """``bound`` (a sampling Denoiser) with every call timed as ``"denoise"``."""
        return _SpannedDenoiser(bound, self)

    def totals(self) -> dict[str, float]:
        """Seconds per category since the last :meth:`reset`."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return {k: sum(s.elapsed_time(e) for s, e in v) / 1000.0 for k, v in self._spans.items()}
        return {k: float(sum(v)) for k, v in self._spans.items()}


class _SpannedDenoiser:
    def __init__(self, bound: Any, timer: SpanTimer) -> None:
        self.bound = bound
        self.timer = timer
        self.cfg_conditioned = bound.cfg_conditioned

    def __call__(self, z: Tensor, timestep: Tensor, *, branches: Sequence[str], cfg: Tensor | None = None) -> Tensor:
        with self.timer.span("denoise"):
            return self.bound(z, timestep, branches=branches, cfg=cfg)


# ---- memory --------------------------------------------------------------------------------------


class MemoryProbe:
    """Peak memory between :meth:`begin` and :meth:`peak`.

    CPU (Linux): the process's peak resident set size. Writing ``5`` to ``/proc/self/clear_refs``
    resets the kernel's high-water mark ``VmHWM`` to the current RSS, so the peak is that of the
    probed stretch (everything resident counts: all loaded models, not only the chunk's tensors).
    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` — torch's allocator
    only (onnxruntime's and TensorRT's own allocations are not seen).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.baseline = 0
        if device.type == "cuda":
            self.method = "torch.cuda.max_memory_allocated (torch allocator only)"
        else:
            if not (Path("/proc/self/clear_refs").exists() and Path("/proc/self/status").exists()):
                raise RuntimeError("peak RSS needs Linux /proc (clear_refs + VmHWM); run the CPU benchmark on Linux")
            self.method = "process peak RSS (VmHWM, reset via /proc/self/clear_refs)"

    def begin(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = int(torch.cuda.memory_allocated(self.device))
        else:
            Path("/proc/self/clear_refs").write_text("5")
            self.baseline = _proc_status_kib("VmRSS") * 1024

    def peak(self) -> int:
        """Peak bytes since :meth:`begin` (everything resident: the process or torch's allocator)."""
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return _proc_status_kib("VmHWM") * 1024

    def growth(self) -> int:
        """Peak bytes since :meth:`begin` above what was in use at :meth:`begin` (the work's own)."""
        return max(0, self.peak() - self.baseline)


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


# ---- FLOPs ---------------------------------------------------------------------------------------


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch's counter knows the CUDA attention kernels but not the CPU flash kernel SDPA uses on CPU.
_CUSTOM_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops}


def flop_counter() -> FlopCounterMode:
    """A silent FlopCounterMode that also counts CPU scaled-dot-product attention."""
    return FlopCounterMode(display=False, custom_mapping=_CUSTOM_FLOPS)


def count_flops(fn: Callable[[], Any]) -> tuple[int, Any]:
    """(FLOPs of one call of ``fn``, its result)."""
    with flop_counter() as counter:
        result = fn()
    return int(counter.get_total_flops()), result


class FlopProbe:
    """The FLOPs of one chunk per category, at the cost of about one denoiser evaluation.

    Used as a backend probe (see ``benchmarks.nfe_latency.InstrumentedBackend``): every span runs
    under a FLOP counter. A denoiser call's FLOPs depend only on its shapes and branches, so the
    wrapped denoiser evaluates the network once per (branches, shape, cfg) and returns that eps again
    for later calls of the same kind, adding the same count: the sampled values are meaningless,
    the count is exact.
    """

    def __init__(self) -> None:
        self.flops: dict[str, int] = defaultdict(int)
        self._active = False

    def reset(self) -> None:
        self.flops = defaultdict(int)

    @contextlib.contextmanager
    def span(self, category: str) -> Iterator[None]:
        if self._active:  # nested span: the outer one counts
            yield
            return
        self._active = True
        try:
            with flop_counter() as counter:
                yield
        finally:
            self._active = False
        self.flops[category] += int(counter.get_total_flops())

    def denoiser(self, bound: Any) -> Any:
        return _FlopCachingDenoiser(bound, self)


class _FlopCachingDenoiser:
    def __init__(self, bound: Any, probe: FlopProbe) -> None:
        self.bound = bound
        self.probe = probe
        self.cfg_conditioned = bound.cfg_conditioned
        self._cache: dict[tuple, tuple[int, Tensor]] = {}

    def __call__(self, z: Tensor, timestep: Tensor, *, branches: Sequence[str], cfg: Tensor | None = None) -> Tensor:
        key = (tuple(branches), tuple(z.shape), cfg is not None)
        if key not in self._cache:
            self._cache[key] = count_flops(lambda: self.bound(z, timestep, branches=branches, cfg=cfg))
        flops, eps = self._cache[key]
        self.probe.flops["denoise"] += flops
        return eps.clone()


def measure_peak_flops(*, device: torch.device, dtype: torch.dtype, size: int | None = None,
                       iters: int | None = None, trials: int = 3) -> dict[str, Any]:
    """Best achieved FLOP/s of a square ``size`` matmul in ``dtype`` (GPU: 8192, CPU: 1024)."""
    cuda = device.type == "cuda"
    size = size or (8192 if cuda else 1024)
    iters = iters or (20 if cuda else 4)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, generator=gen, device=device).to(dtype)
    b = torch.randn(size, size, generator=gen, device=device).to(dtype)
    torch.matmul(a, b)  # warm-up (library init, kernel selection)
    synchronize(device)
    best = 0.0
    for _ in range(trials):
        t0 = time.perf_counter()
        for _ in range(iters):
            torch.matmul(a, b)
        synchronize(device)
        best = max(best, 2.0 * size**3 * iters / (time.perf_counter() - t0))
    return {"flops_per_s": best, "tflops": best / 1e12, "dtype": str(dtype).removeprefix("torch."),
            "method": f"best of {trials} x {iters} matmuls {size}x{size}x{size}"}


# ---- a backend seen through a probe --------------------------------------------------------------


class InstrumentedBackend:
    """A Backend seen through a probe (a :class:`SpanTimer` or :class:`FlopProbe`): each call runs in
    the probe's span of its category; the bound denoiser also counts frame evaluations (branches x frames per
    call), which per frame out are the NFE of a chunk or a rolling sampler alike."""

    def __init__(self, inner: Any, probe: SpanTimer | FlopProbe) -> None:
        self.inner = inner
        self.probe = probe
        self.nfe = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def audio_features(self, wave: Tensor) -> Tensor:
        with self.probe.span("audio"):
            return self.inner.audio_features(wave)

    def encode(self, images: Tensor) -> Tensor:
        with self.probe.span("prepare"):
            return self.inner.encode(images)

    def reference(self, ref_latent: Tensor) -> Any:
        with self.probe.span("prepare"):
            return self.inner.reference(ref_latent)

    def conditions(self, reference: Any, motion_latents: Tensor, windows: Tensor) -> Any:
        with self.probe.span("conditions"):
            return self.inner.conditions(reference, motion_latents, windows)

    def motion_features(self, motion_latents: Tensor) -> Any:  # a rolling sampler builds its conditions piecewise
        with self.probe.span("conditions"):
            return self.inner.motion_features(motion_latents)

    def audio_tokens(self, windows: Tensor) -> Tensor:
        with self.probe.span("conditions"):
            return self.inner.audio_tokens(windows)

    def decode(self, latents: Tensor) -> Tensor:
        with self.probe.span("decode"):
            return self.inner.decode(latents)

    def bind(self, conditions: Any) -> Any:
        return _CountingDenoiser(self.probe.denoiser(self.inner.bind(conditions)), self)

    def sample_chunk(self, sampler: Any, conditions: Any, start: Tensor, *, frames: int) -> tuple[Tensor, Tensor]:
        """A chunk graph (one program: the steps and the decode) in one "denoise" span, its frame evaluations
        counted from the sampler."""
        with self.probe.span("denoise"):
            out = self.inner.sample_chunk(sampler, conditions, start, frames=frames)
        self.nfe += sampler.nfe * start.shape[1]
        return out


class _CountingDenoiser:
    def __init__(self, bound: Any, owner: InstrumentedBackend) -> None:
        self.bound, self.owner, self.cfg_conditioned = bound, owner, bound.cfg_conditioned

    def __call__(self, z: Tensor, timestep: Tensor, *, branches: Sequence[str],
                 cfg: Tensor | None = None) -> Tensor:
        self.owner.nfe += len(branches) * z.shape[1]  # frame evaluations (B = 1): / frames out = the paper's NFE-D
        return self.bound(z, timestep, branches=branches, cfg=cfg)
