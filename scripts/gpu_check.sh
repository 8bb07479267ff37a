#!/usr/bin/env bash
# What only a CUDA GPU can show about speed, in one call of a time-limited GPU lease (issues 26 and 27):
#
#   bash scripts/gpu_check.sh OUT        (run from the repository root; diffusers installed, e.g. from a carried wheel)
#
# 1. environment: nvidia-smi, torch/CUDA/diffusers versions;
# 2. the tests that touch CUDA: pytest -m gpu (eager, fp16 CUDA graphs, torch.compile, the chunk graph);
# 3. benchmarks.nfe_latency, fast student at $PRESET: eager vs torch-compiled (every network compiled, a CUDA graph
#    per denoiser call) vs torch-chunk-graph (the whole chunk one compiled graph, one CUDA graph), full VAE, with each
#    path's parity against eager;
# 4. the same three with the tiny decoder (a random one of the preset's shape: the work, not the quality);
# 5. the studies beside eager: channels-last, the SDPA kernels (flash, efficient, cuDNN), fp8 (torchao, if there);
# 6. the streaming sampler beside the chunked fast student, with the real-time rows (first frame, audio-to-frame).
#
# Everything lands in OUT/logs.tar.gz (logs, benchmark JSON and markdown). Each stage has its own time limit and
# a failing stage does not stop the next; the defaults fit the whole script in under 8 minutes. Knobs
# (environment): DEVICE (cuda), PRESET (sd15), REPEATS (5), T_TESTS (100), T_VAE (150), T_TINY (100),
# T_STUDY (60), T_STREAM (60) seconds per stage. On a CPU (DEVICE=cpu PRESET=tiny) it runs what a CPU can: the
# script's own test.
set -uo pipefail
OUT=${1:?usage: bash scripts/gpu_check.sh OUT}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-sd15}
REPEATS=${REPEATS:-5}
T_TESTS=${T_TESTS:-100}
T_VAE=${T_VAE:-150}
T_TINY=${T_TINY:-100}
T_STUDY=${T_STUDY:-60}
T_STREAM=${T_STREAM:-60}
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=5
START=$(date +%s)
LOGS=$OUT/logs
mkdir -p "$LOGS"
stage() { echo "== $(date -u +%T) [$(($(date +%s) - START)) s] $*" | tee -a "$LOGS/stages.log"; }
bench() {  # NAME TIMEOUT ARGS...: one benchmark run, its JSON and markdown in LOGS
  local name=$1 limit=$2
  shift 2
  timeout "$limit" python3 -m benchmarks.nfe_latency --preset "$PRESET" --device "$DEVICE" --repeats "$REPEATS" \
    --no-progress --out "$LOGS/$name.json" "$@" >"$LOGS/$name.log" 2>&1
  echo "$name: rc $?"; grep -E "^\| fast|^\| stream|parity|target|not run" "$LOGS/$name.log" | head -30
}

stage "1 environment"
{ nvidia-smi
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  python3 -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
  python3 -c "import diffusers; print('diffusers', diffusers.__version__)"
} >"$LOGS/environment.log" 2>&1
tail -3 "$LOGS/environment.log"

stage "2 tests touching CUDA"
timeout "$T_TESTS" python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_compile.py tests/test_pipeline.py \
  >"$LOGS/pytest.log" 2>&1
echo "tests: rc $?; $(tail -1 "$LOGS/pytest.log")"

stage "3 fast student, full VAE: eager / compiled / chunk graph"
bench vae "$T_VAE" --variants fast --backend torch torch-compiled torch-chunk-graph --realtime 0

stage "4 fast student, tiny decoder: eager / compiled / chunk graph"
bench tiny-decoder "$T_TINY" --variants fast --backend torch torch-compiled torch-chunk-graph --realtime 0 \
  --decoder tiny

stage "5 studies beside eager: channels-last, SDPA kernels, fp8"
bench studies "$T_STUDY" --variants fast --backend torch torch+channels-last torch+sdpa-flash torch+sdpa-efficient \
  torch+sdpa-cudnn torch+fp8 --realtime 0

stage "6 streaming sampler beside the chunked fast student, real time"
bench stream "$T_STREAM" --variants fast stream --backend torch --realtime 10 --realtime-rounds 1

stage "done"
tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -rf "$LOGS"
ls -la "$OUT"
