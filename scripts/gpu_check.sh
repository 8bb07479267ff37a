#!/usr/bin/env bash
# What only a CUDA GPU can show, in one call of a time-limited GPU lease (docs/experiments/2026-12-04-first-gpu-lease.md):
#
#   bash scripts/gpu_check.sh OUT SYNC_EXPERT        (run from the repository root)
#
# 1. environment: nvidia-smi, torch/CUDA versions;
# 2. the synthetic world's clean clips straight into a latent cache on the GPU (python -m train.cache
#    --synthetic: no clip files, no PyAV), in the background while 3 builds its models;
# 3. benchmarks.nfe_latency at sd15 scale (eager fp16: teacher, balanced, fast);
# 4. the tests that touch CUDA (pytest -m gpu, and the training tests, which run on the GPU when one is
#    there), in the background while 5 runs;
# 5. the shipped tiny teacher trained further with its own objective (hinge sync term up to t = 900,
#    dataset motion map) in bf16 at GPU batch sizes, two settings side by side, stopped by --max-minutes.
#
# Everything lands in OUT: logs.tar.gz (logs, benchmark JSON, metrics) and run-<name>.tar (each run's
# EMA teacher, teacher-latest/, and metrics.csv). Every stage has its own time limit and a failing
# stage does not stop the next. Knobs (environment): BUDGET (seconds for the whole script, default 570),
# DEVICE (cuda), CLIPS (4000: the world of scripts/train_tiny.sh), WORKERS (12), BENCH_PRESET (sd15),
# BENCH_TIMEOUT (170), MIXED (bf16), RUNS ("r1:64:1.5e-4:20 r2:128:3e-4:21" = name:batch:lr:seed), TESTS.
set -uo pipefail
OUT=${1:?usage: bash scripts/gpu_check.sh OUT SYNC_EXPERT}
EXPERT=${2:?usage: bash scripts/gpu_check.sh OUT SYNC_EXPERT}
BUDGET=${BUDGET:-570}
DEVICE=${DEVICE:-cuda}
CLIPS=${CLIPS:-4000}
WORKERS=${WORKERS:-12}
BENCH_PRESET=${BENCH_PRESET:-sd15}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-170}
MIXED=${MIXED:-bf16}
RUNS=${RUNS:-"r1:64:1.5e-4:20 r2:128:3e-4:21"}
TESTS=${TESTS:-"tests/test_pipeline.py tests/test_train_teacher.py tests/test_distill.py"}
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=5
START=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - START))); }
WORK=$(mktemp -d)
LOGS=$OUT/logs
mkdir -p "$LOGS"
stage() { echo "== $(date -u +%T) [$(($(date +%s) - START)) s] $*" | tee -a "$LOGS/stages.log"; }

stage "1 environment"
{ nvidia-smi
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  python3 -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
  python3 -c "import diffusers, transformers, accelerate as a; print(diffusers.__version__, transformers.__version__, a.__version__)"
} >"$LOGS/environment.log" 2>&1
tail -3 "$LOGS/environment.log"

# the world renders on the CPU cores while the benchmark builds its sd15 models (CPU-bound too); the
# cache is done before the benchmark's timed repetitions (its JSON records the CPU other processes took)
stage "2 synthetic world -> latent cache on $DEVICE ($CLIPS clips, clean ones only; background)"
timeout 150 python3 -m train.cache --synthetic "$CLIPS" --seed 0 --tier B --manifest A --workers "$WORKERS" \
  --data "$WORK/world" --vae fada_rt/assets/tiny-vae --out "$WORK/cache" --device "$DEVICE" \
  >"$LOGS/cache.log" 2>&1 &
CACHE_PID=$!

stage "3 nfe_latency $BENCH_PRESET on $DEVICE"
timeout "$BENCH_TIMEOUT" python3 -m benchmarks.nfe_latency --preset "$BENCH_PRESET" --device "$DEVICE" \
  --backend torch --repeats 3 --warmup 1 --no-progress --out "$LOGS/nfe_latency_${BENCH_PRESET}_$DEVICE.json" \
  >"$LOGS/nfe_latency.log" 2>&1
echo "benchmark: rc $?"; tail -25 "$LOGS/nfe_latency.log"
wait $CACHE_PID
echo "cache: rc $?, $(ls "$WORK/cache" 2>/dev/null | wc -l) files"; tail -1 "$LOGS/cache.log"

stage "4 tests touching CUDA (background, beside the teacher runs)"
# shellcheck disable=SC2086
OMP_NUM_THREADS=2 timeout 240 python3 -m pytest -q -p no:cacheprovider -n 4 $TESTS >"$LOGS/pytest.log" 2>&1 &
TESTS_PID=$!

MINUTES=$(python3 -c "print(max(0.5, ($(left) - 60) / 60))")
stage "5 teacher runs, $MINUTES min each: $RUNS"
PIDS=()
for spec in $RUNS; do
  IFS=: read -r name batch lr seed <<<"$spec"
  OMP_NUM_THREADS=4 python3 -m train.teacher --data "$WORK/world" --manifest A --cache "$WORK/cache" \
    --init fada_rt/assets/tiny-teacher --run "$WORK/$name" --steps 100000 --batch-size "$batch" --lr "$lr" \
    --seed "$seed" --loss-weighting truncated_snr --motion-weight 1 --motion-map dataset \
    --sync-expert "$EXPERT" --sync-weight 0.1 --sync-target audio-hinge --sync-max-t 900 \
    --mixed-precision "$MIXED" --checkpoint-every 2000 --max-minutes "$MINUTES" >"$LOGS/teacher-$name.log" 2>&1 &
  PIDS+=($!)
done
for pid in "${PIDS[@]}"; do wait "$pid"; echo "teacher pid $pid: rc $?"; done
wait $TESTS_PID
echo "tests: rc $?; $(tail -1 "$LOGS/pytest.log")"
for spec in $RUNS; do
  name=${spec%%:*}
  cp "$WORK/$name/metrics.csv" "$LOGS/metrics-$name.csv" 2>/dev/null
  tail -2 "$LOGS/teacher-$name.log"
  tar -cf "$OUT/run-$name.tar" -C "$WORK/$name" teacher-latest metrics.csv 2>>"$LOGS/stages.log"
done
stage "done"
tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -rf "$LOGS"
ls -la "$OUT"
