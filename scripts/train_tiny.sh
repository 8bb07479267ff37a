#!/usr/bin/env bash
# The whole tiny-preset recipe, on the synthetic world: data, VAE, teacher, every distillation variant
# of the paper's Tables 2-4, the quality table, and the shipped assets. CPU is enough for all but the last
# teacher stage (2 cores: about 1.5 h VAE + 3.5 h teacher + 2 h of distillation); that one ran 6 minutes on an
# H200 in bf16 (scripts/gpu_check.sh) and takes hours on a CPU. Every step resumes where it stopped.
#
#   bash scripts/train_tiny.sh [WORK_DIR]        (default: ./work; run from the repository root)
#
# docs/training.md explains each numbered stage below (what it trains, why, how long, what it writes).
# The numbers in docs/training.md, docs/experiments/ and benchmarks/results/ come from exactly these commands.
set -euo pipefail
WORK=${1:-work}
DATA=$WORK/data/world
HELDOUT=$WORK/data/heldout
RUNS=$WORK/runs
CACHE=$RUNS/cache-world
SOLVES=$RUNS/solves
DISTILL_STEPS=${DISTILL_STEPS:-300}  # the shipped students; more steps are better where time allows
mkdir -p "$RUNS"

# 1. the synthetic world: 4000 tier-B clips (about half clean = tier A) and unseen held-out identities
[ -f "$DATA/manifest_B.txt" ] || python -m train.synthetic --out "$DATA" --clips 4000 --size 64 --tier B --seed 0
[ -f "$HELDOUT/manifest_B.txt" ] || python -m train.synthetic --out "$HELDOUT" --clips 96 --size 64 --tier B --seed 1

# 2. the small VAE (f=4) and the latent/audio cache
[ -f "$RUNS/vae-tiny/vae.safetensors" ] || \
  python -m train.vae --data "$DATA" --out "$RUNS/vae-tiny" --steps 3000 --max-clips 800 --log "$RUNS/vae-tiny.csv"
python -m train.cache --data "$DATA" --vae "$RUNS/vae-tiny" --out "$CACHE" --manifest B

# 3. the teacher on the strict set A: three stages a-c, then the fine-tuning runs below, where those marked "on the
#    shipped teacher's path" lead (with stage 6) to the shipped teacher and the others are A/B runs beside them:
#    a. Eq. 1 with an epsilon-prediction UNet, as in the paper, 3000 steps;
#    b. 2000 steps with the truncated-SNR weight max(1, 1/SNR) (x0 accuracy at high noise);
#    c. 7000 steps as a v-prediction UNet (the tiny preset's parametrisation): an epsilon network's x0
#       error at t = 1 is its eps error times 1/sqrt(abar) = 14.6, and its DDIM samples stayed blotchy
#       (docs/experiments/2026-11-21-v-prediction-teacher.md). A new run can start with c alone (--vae, no --init).
python -m train.teacher --data "$DATA" --manifest A --cache "$CACHE" --vae "$RUNS/vae-tiny" --prediction epsilon \
  --run "$RUNS/teacher-tiny-uniform" --steps 5000 --stop-after 3000 --batch-size 4 --lr 3e-4 \
  --checkpoint-every 1000 --validate-every 2500 --val-data "$HELDOUT" --val-clips 4
python -m train.teacher --data "$DATA" --manifest A --cache "$CACHE" --init "$RUNS/teacher-tiny-uniform/teacher-latest" \
  --run "$RUNS/teacher-tiny-eps" --steps 2000 --batch-size 4 --lr 3e-4 --loss-weighting truncated_snr \
  --checkpoint-every 500
python -m train.teacher --data "$DATA" --manifest A --cache "$CACHE" --init "$RUNS/teacher-tiny-eps/teacher" \
  --run "$RUNS/teacher-tiny" --steps 7000 --batch-size 4 --lr 3e-4 --loss-weighting truncated_snr \
  --prediction v --seed 2 --checkpoint-every 1000

# the floor of the quality table: the same network untrained (random init, the trained VAE)
python -m train.teacher --data "$DATA" --manifest A --cache "$CACHE" --vae "$RUNS/vae-tiny" --prediction epsilon --run "$RUNS/untrained" --steps 0
# on the shipped teacher's path: 2500 more steps with the motion-weighted loss (mouth width follows the audio better;
# docs/experiments/2026-11-21-motion-weighted-loss.md)
python -m train.teacher --data "$DATA" --manifest A --cache "$CACHE" --init "$RUNS/teacher-tiny/teacher" \
  --run "$RUNS/teacher-mw1" --steps 2500 --batch-size 4 --lr 1.5e-4 --loss-weighting truncated_snr --seed 3 \
  --motion-weight 1 --checkpoint-every 500
# on the shipped teacher's path: 5000 more steps of the same in two runs (width follows the audio: r 0.21 -> 0.56)
python -m train.teacher --data "$DATA" --manifest A --cache "$CACHE" --init "$RUNS/teacher-mw1/teacher" \
  --run "$RUNS/teacher-mw1-cont" --steps 2500 --batch-size 4 --lr 1.5e-4 --loss-weighting truncated_snr --seed 4 \
  --motion-weight 1
python -m train.teacher --data "$DATA" --manifest A --cache "$CACHE" --init "$RUNS/teacher-mw1-cont/teacher" \
  --run "$RUNS/teacher-mw-long" --steps 2500 --batch-size 4 --lr 1.5e-4 --loss-weighting truncated_snr --seed 5 \
  --motion-weight 1
# the latent lip-sync expert and the A/B of its loss (docs/experiments/2026-11-22-where-width-is-lost.md; not
# shipped: Sync-D worse)
[ -f "$RUNS/sync-expert/model.safetensors" ] || \
  python -m train.sync_expert --data "$DATA" --cache "$CACHE" --out "$RUNS/sync-expert" --steps 3000
for target in audio video; do
  python -m train.teacher --data "$DATA" --manifest A --cache "$CACHE" --init "$RUNS/teacher-mw1/teacher" \
    --run "$RUNS/teacher-mw1-sync-$target" --steps 2500 --batch-size 4 --lr 1.5e-4 --loss-weighting truncated_snr \
    --seed 4 --motion-weight 1 --sync-expert "$RUNS/sync-expert" --sync-weight 0.05 --sync-target "$target"
done

# on the shipped teacher's path: 2500 more steps from the 7500-step one with the motion weight's map taken from the
# training set's mean (--motion-map dataset: one fixed lip-region map; each chunk's own map tilts the
# optimum towards over-moving mouths), and, as an A/B, the sync expert's hinge target on the same start
# (docs/experiments/2026-11-22-dataset-motion-map.md)
python -m train.teacher --data "$DATA" --manifest A --cache "$CACHE" --init "$RUNS/teacher-mw-long/teacher" \
  --run "$RUNS/teacher-mw-dsmap" --steps 2500 --batch-size 4 --lr 1.5e-4 --loss-weighting truncated_snr --seed 6 \
  --motion-weight 1 --motion-map dataset
python -m train.teacher --data "$DATA" --manifest A --cache "$CACHE" --init "$RUNS/teacher-mw-long/teacher" \
  --run "$RUNS/teacher-mw-long-hinge" --steps 2500 --batch-size 4 --lr 1.5e-4 --loss-weighting truncated_snr \
  --seed 6 --motion-weight 1 --sync-expert "$RUNS/sync-expert" --sync-weight 0.1 --sync-target audio-hinge
python -m train.teacher --data "$DATA" --manifest A --cache "$CACHE" --init "$RUNS/teacher-mw-dsmap/teacher" \
  --run "$RUNS/teacher-mw-dsmap-hinge" --steps 2500 --batch-size 4 --lr 1.5e-4 --loss-weighting truncated_snr \
  --seed 7 --motion-weight 1 --motion-map dataset --sync-expert "$RUNS/sync-expert" --sync-weight 0.1 \
  --sync-target audio-hinge   # the hinge on top of the dataset-map teacher (docs/experiments/2026-11-22-lip-sync-hinge-t900.md)
# on the shipped teacher's path: 2500 more hinge steps with the term on x0 predictions up to t = 900 (where the mouth is
# decided), default guidance 1.5 / 1; and the A/B beside it: weight 0.3 at the default t <= 500
python -m train.teacher --data "$DATA" --manifest A --cache "$CACHE" --init "$RUNS/teacher-mw-dsmap-hinge/teacher" \
  --run "$RUNS/teacher-hinge-t900" --steps 2500 --batch-size 4 --lr 1.5e-4 --loss-weighting truncated_snr \
  --seed 10 --motion-weight 1 --motion-map dataset --sync-expert "$RUNS/sync-expert" --sync-weight 0.1 \
  --sync-target audio-hinge --sync-max-t 900
python -m fada_rt.checkpoint "$RUNS/teacher-hinge-t900/teacher" --set-guidance 1.5 1
python -m train.teacher --data "$DATA" --manifest A --cache "$CACHE" --init "$RUNS/teacher-mw-dsmap-hinge/teacher" \
  --run "$RUNS/teacher-hinge-w0.3" --steps 2500 --batch-size 4 --lr 1.5e-4 --loss-weighting truncated_snr \
  --seed 9 --motion-weight 1 --motion-map dataset --sync-expert "$RUNS/sync-expert" --sync-weight 0.3 \
  --sync-target audio-hinge
# on the shipped teacher's path: the t <= 900 hinge teacher trained 6 minutes more on an H200 with its own objective in bf16
# at GPU batch sizes (scripts/gpu_check.sh, which builds its cache with python -m train.cache --synthetic on the
# GPU and reads the fada_rt/assets teacher of that time = teacher-hinge-t900). Two settings side by side: r1
# (batch 64, lr 1.5e-4: 1408 steps) and r2 (batch 128, lr 3e-4: 1273 steps, shipped). Both were stopped by
# --max-minutes 5.95; --stop-after gives the same step count (on a CPU: hours, and without bf16).
# (docs/experiments/2026-12-04-first-gpu-lease.md)
for spec in r1:64:1.5e-4:20:1408 r2:128:3e-4:21:1273; do
  IFS=: read -r name batch lr seed stop <<<"$spec"
  python -m train.teacher --data "$DATA" --manifest A --cache "$CACHE" --init "$RUNS/teacher-hinge-t900/teacher" \
    --run "$RUNS/teacher-gpu-$name-run" --steps 100000 --stop-after "$stop" --batch-size "$batch" --lr "$lr" \
    --seed "$seed" --loss-weighting truncated_snr --motion-weight 1 --motion-map dataset \
    --sync-expert "$RUNS/sync-expert" --sync-weight 0.1 --sync-target audio-hinge --sync-max-t 900 \
    --mixed-precision bf16 --checkpoint-every 2000
  mkdir -p "$RUNS/teacher-gpu-$name"
  cp -r "$RUNS/teacher-gpu-$name-run/teacher-latest" "$RUNS/teacher-gpu-$name/teacher"
done

# 4. distillation: every variant of Tables 2-4 from the v teacher, sharing the teacher's window solves within a
#    family (docs/experiments/2026-11-21-distillation-tables-2-4.md)
for variant in balanced fast B-fixed-0 cfg-time-embed cfg-layer-mlp B-fixed-0.2 B-fixed-1.0 \
               B-unlimited-0.5 B-unlimited-0.25 B-adaptive-0.5 perflow-A; do
  python -m train.distill --teacher "$RUNS/teacher-tiny/teacher" --data "$DATA" --cache "$CACHE" \
    --run "$RUNS/distill/$variant" --variant "$variant" --solve-cache "$SOLVES" \
    --steps "$DISTILL_STEPS" --lr 1e-4
done

# 5. the balanced and fast students of each later teacher: rows of the quality table, and each pair shipped in
#    its turn (the last pair, distill-gpu, until stage 6)
for variant in balanced fast; do  # the students of the 2500-step MW teacher (shipped before)
  python -m train.distill --teacher "$RUNS/teacher-mw1/teacher" --data "$DATA" --cache "$CACHE" \
    --run "$RUNS/distill-mw1/$variant" --variant "$variant" --solve-cache "$SOLVES" \
    --steps "$DISTILL_STEPS" --lr 1e-4 --motion-weight 1
done
for variant in balanced fast; do  # the students of the 7500-step teacher (balanced shipped before)
  python -m train.distill --teacher "$RUNS/teacher-mw-long/teacher" --data "$DATA" --cache "$CACHE" \
    --run "$RUNS/distill-mw-long/$variant" --variant "$variant" --solve-cache "$SOLVES" \
    --steps "$DISTILL_STEPS" --lr 1e-4 --motion-weight 1
done
for variant in balanced fast; do  # the students of the shipped teacher (balanced shipped)
  python -m train.distill --teacher "$RUNS/teacher-mw-dsmap/teacher" --data "$DATA" --cache "$CACHE" \
    --run "$RUNS/distill-mw-dsmap/$variant" --variant "$variant" --solve-cache "$SOLVES" \
    --steps "$DISTILL_STEPS" --lr 1e-4 --motion-weight 1 --motion-map dataset
done
# the shipped fast student: scales drawn around its default 2 / 1, its CFG tokens and layers at 10x the
# learning rate (docs/experiments/2026-11-22-fast-student-guidance-scales.md), and the A/B parts of that change
# (the rows marked 1 there were made with the tokens' former std 0.02; they are not re-run here)
FAST=(--teacher "$RUNS/teacher-mw-dsmap/teacher" --data "$DATA" --cache "$CACHE" --variant fast
      --solve-cache "$SOLVES" --lr 1e-4 --motion-weight 1 --motion-map dataset)
python -m train.distill "${FAST[@]}" --run "$RUNS/distill-cfg/fast" --steps "$DISTILL_STEPS" \
  --cfg-a-range 1 4 --cfg-r-range 1 2 --cfg-lr-scale 10
python -m train.distill "${FAST[@]}" --run "$RUNS/distill-cfg/narrow-lr1" --steps "$DISTILL_STEPS" \
  --cfg-a-range 1 4 --cfg-r-range 1 2
python -m train.distill "${FAST[@]}" --run "$RUNS/distill-cfg/tokens-only" --steps "$DISTILL_STEPS"
python -m train.distill "${FAST[@]}" --run "$RUNS/distill-cfg/tokens-lr10" --steps "$DISTILL_STEPS" --cfg-lr-scale 10
cp -r "$RUNS/distill-cfg/fast" "$RUNS/distill-cfg/fast-600"  # the same run, 300 steps further
python -m train.distill "${FAST[@]}" --run "$RUNS/distill-cfg/fast-600" --steps 600 \
  --cfg-a-range 1 4 --cfg-r-range 1 2 --cfg-lr-scale 10
# the students shipped before: distilled from the t <= 900 hinge teacher, the fast one on scales around 1.5 / 1
T900=(--teacher "$RUNS/teacher-hinge-t900/teacher" --data "$DATA" --cache "$CACHE" --solve-cache "$SOLVES"
      --steps "$DISTILL_STEPS" --lr 1e-4 --motion-weight 1 --motion-map dataset)
python -m train.distill "${T900[@]}" --run "$RUNS/distill-t900/balanced" --variant balanced
python -m train.distill "${T900[@]}" --run "$RUNS/distill-t900/fast" --variant fast \
  --cfg-a-range 1 2.5 --cfg-r-range 1 1.5 --cfg-lr-scale 10
# the shipped students: the same two commands from the GPU-trained teacher (r2)
TGPU=(--teacher "$RUNS/teacher-gpu-r2/teacher" --data "$DATA" --cache "$CACHE" --solve-cache "$SOLVES"
      --steps "$DISTILL_STEPS" --lr 1e-4 --motion-weight 1 --motion-map dataset)
python -m train.distill "${TGPU[@]}" --run "$RUNS/distill-gpu/balanced" --variant balanced
python -m train.distill "${TGPU[@]}" --run "$RUNS/distill-gpu/fast" --variant fast \
  --cfg-a-range 1 2.5 --cfg-r-range 1 1.5 --cfg-lr-scale 10

# 6. the endless avatar (docs/experiments/2026-12-04-endless-avatar.md). Shipped: the GPU teacher (r2) 2500 steps
#    more with its own objective and the mixed noise prior (each sample's frames share rho ~ U(0, 0.95) of their
#    noise), its students distilled with rho ~ U(0, 1); all three run with the session's noise shared by every
#    frame (noise_sharing=1) and the motion frames pulled half-way to the portrait (motion_anchor=0.5).
#    Candidates measured beside it: Hallo2's motion-frame noise (mn100) and a reference sink with it (sink-mn50).
ENDLESS=(--data "$DATA" --manifest A --cache "$CACHE" --init "$RUNS/teacher-gpu-r2/teacher" --steps 2500
         --batch-size 4 --lr 1.5e-4 --loss-weighting truncated_snr --motion-weight 1 --motion-map dataset
         --sync-expert "$RUNS/sync-expert" --sync-weight 0.1 --sync-target audio-hinge --sync-max-t 900
         --checkpoint-every 500 --seed 30)
python -m train.teacher "${ENDLESS[@]}" --run "$RUNS/teacher-ns95" --noise-sharing-max 0.95
python -m train.teacher "${ENDLESS[@]}" --run "$RUNS/teacher-mn100" --motion-noise-steps 100
python -m train.teacher "${ENDLESS[@]}" --run "$RUNS/teacher-sink-mn50" --reference-sink --motion-noise-steps 50
TNS=(--teacher "$RUNS/teacher-ns95/teacher" --data "$DATA" --cache "$CACHE" --solve-cache "$SOLVES"
     --steps "$DISTILL_STEPS" --lr 1e-4 --motion-weight 1 --motion-map dataset --noise-sharing-max 1)
python -m train.distill "${TNS[@]}" --run "$RUNS/distill-ns/balanced" --variant balanced
python -m train.distill "${TNS[@]}" --run "$RUNS/distill-ns/fast" --variant fast \
  --cfg-a-range 1 2.5 --cfg-r-range 1 1.5 --cfg-lr-scale 10
for ckpt in teacher-ns95/teacher distill-ns/balanced/student distill-ns/fast/student; do
  python -m fada_rt.checkpoint "$RUNS/$ckpt" --set-rollout motion_anchor=0.5 noise_sharing=1
done

# 6b. real voices (docs/experiments/2026-12-05-real-voices.md): world speech v2 (espeak-ng and festival speak, the
#     phones they report drive the mouth; flite is held out), cached with two augmented copies of each clip's audio,
#     merged with the first world; the metrics' mouth estimator and the sync expert on both worlds; the endless
#     teacher fine-tuned on both with audio augmentation, its students re-distilled the same way (shipped)
V2=$WORK/data/v2
MIXED=$WORK/data/mixed
[ -f "$RUNS/cache-v2/index.json" ] || python -m train.cache --synthetic 2400 --seed 10 --first-index 100000 \
  --speech tts --tier B --audio-variants 2 --workers 2 --data "$V2/world" --out "$RUNS/cache-v2" --vae "$RUNS/vae-tiny"
[ -f "$V2/heldout-flite/manifest_A.txt" ] || python -m train.synthetic --out "$V2/heldout-flite" --clips 48 --size 64 \
  --tier A --seed 11 --speech flite --min-seconds 4 --max-seconds 6
[ -f "$V2/heldout-tts/manifest_A.txt" ] || python -m train.synthetic --out "$V2/heldout-tts" --clips 48 --size 64 \
  --tier A --seed 12 --speech tts --min-seconds 4 --max-seconds 6
[ -f "$RUNS/cache-mixed/index.json" ] || python -m train.cache --merge "$DATA:$CACHE" "$V2/world:$RUNS/cache-v2" \
  --data "$MIXED" --out "$RUNS/cache-mixed"
python -m train.mouth_estimator --out fada_rt/metrics/weights --clips 1800 --steps 4000 --speech synth tts
[ -f "$RUNS/sync-expert-mixed/model.safetensors" ] || \
  python -m train.sync_expert --data "$MIXED" --cache "$RUNS/cache-mixed" --out "$RUNS/sync-expert-mixed" --steps 3000
python -m train.teacher --data "$MIXED" --manifest A --cache "$RUNS/cache-mixed" --init "$RUNS/teacher-ns95/teacher" \
  --run "$RUNS/teacher-voices" --steps "${VOICE_STEPS:-2000}" --batch-size 4 --lr 1.5e-4 --loss-weighting truncated_snr \
  --motion-weight 1 --motion-map dataset --sync-expert "$RUNS/sync-expert-mixed" --sync-weight 0.1 \
  --sync-target audio-hinge --sync-max-t 900 --noise-sharing-max 0.95 --audio-augment 0.5 --checkpoint-every 500 --seed 40
TV=(--teacher "$RUNS/teacher-voices/teacher" --data "$MIXED" --cache "$RUNS/cache-mixed" --solve-cache "$SOLVES"
    --steps "$DISTILL_STEPS" --lr 1e-4 --motion-weight 1 --motion-map dataset --noise-sharing-max 1 --audio-augment 0.5)
python -m train.distill "${TV[@]}" --run "$RUNS/distill-voices/fast" --variant fast \
  --cfg-a-range 1 2.5 --cfg-r-range 1 1.5 --cfg-lr-scale 10
python -m train.distill "${TV[@]}" --run "$RUNS/distill-voices/balanced" --variant balanced
for ckpt in teacher-voices/teacher distill-voices/balanced/student distill-voices/fast/student; do
  python -m fada_rt.checkpoint "$RUNS/$ckpt" --set-rollout motion_anchor=0.5 noise_sharing=1
done
# 6c. the streaming student (docs/experiments/2026-12-05-streaming.md): the real-voice fast student tuned 300 steps
#     for the rolling sampler's per-frame noise levels (windows of 1-4 frames), from the same teacher (~19 min on 2
#     cores; it keeps the fast student's rollout)
python -m train.distill --teacher "$RUNS/teacher-voices/teacher" --init-student "$RUNS/distill-voices/fast/student" \
  --data "$MIXED" --cache "$RUNS/cache-mixed" --variant stream --steps 300 --lr 1e-4 --motion-weight 1 \
  --motion-map dataset --noise-sharing-max 1 --audio-augment 0.5 --cfg-a-range 1 2.5 --cfg-r-range 1 1.5 \
  --run "$RUNS/distill-voices/stream"

# 6d. the tiny decoder (TAESD's shape) distilled from the tiny VAE's decoder: the VAE's frames of cached latents as
#     targets, 1500 steps of batch 32 (~8 min on 2 cores)
python -m train.tiny_decoder --checkpoint "$RUNS/distill-voices/fast/student" --cache "$RUNS/cache-mixed" \
  --run "$RUNS/tiny-decoder" --steps 1500 --batch-size 32

# 7. the quality table of every run above (benchmarks/results/quality_table.{md,json})
python -m benchmarks.quality_table --runs "$RUNS" --data "$HELDOUT" --clips 16 --out benchmarks/results
# (the rows of the last two groups of METHODS were scored with --seed 0 1: --only NAME ... --seed 0 1, then --merge)
# 8. the shipped assets (fada_rt/assets/README.md): the real-voice models of stage 6b and the VAE of stage 2
rm -rf fada_rt/assets/tiny-fast fada_rt/assets/tiny-stream fada_rt/assets/tiny-balanced fada_rt/assets/tiny-teacher \
  fada_rt/assets/tiny-vae fada_rt/assets/tiny-decoder
cp -r "$RUNS/distill-voices/fast/student" fada_rt/assets/tiny-fast
cp -r "$RUNS/distill-voices/stream/student" fada_rt/assets/tiny-stream
cp -r "$RUNS/tiny-decoder/decoder" fada_rt/assets/tiny-decoder
cp -r "$RUNS/distill-voices/balanced/student" fada_rt/assets/tiny-balanced
cp -r "$RUNS/teacher-voices/teacher" fada_rt/assets/tiny-teacher
cp -r "$RUNS/vae-tiny" fada_rt/assets/tiny-vae
# the real voices of the shipped fast student and the one before it (docs/experiments/2026-12-05-real-voices.md)
python -m benchmarks.real_voices --data "$V2/heldout-flite" --checkpoint "$RUNS/distill-ns/fast/student" --clips 24 \
  --max-frames 150 --out benchmarks/results/voices --name endless-fast
python -m benchmarks.real_voices --data "$V2/heldout-flite" --checkpoint fada_rt/assets/tiny-fast --clips 24 \
  --max-frames 150 --out benchmarks/results/voices --name real-voice-fast
python -m benchmarks.quality_table --runs "$RUNS" --data "$HELDOUT" --clips 16 --seed 0 1 --out benchmarks/results/voices \
  --only "endless fast (the default)" "real-voice fast (the default)" "endless balanced" "real-voice balanced" \
  "endless teacher, DDIM 6 x 3" "real-voice teacher, DDIM 6 x 3"
# the rolling sampler beside the chunked fast student, and what the audio look-ahead buys (benchmarks/results/stream)
python -m benchmarks.quality_table --runs "$RUNS" --data "$HELDOUT" --clips 16 --seed 0 1 --out benchmarks/results/stream \
  --only "real-voice fast (the default)" "real-voice fast, rolling 4 x 1 (untuned)" \
  "streaming student, rolling 4 x 1 (stream)" "streaming student, look-ahead 1 frame" \
  "streaming student, look-ahead 0 frames"
# 9. the long runs of the shipped models (benchmarks/results/long_run.{json,md,png} and long_run/)
python -m benchmarks.long_run --sampler fast --name "endless fast (the default)"
python -m benchmarks.long_run --sampler balanced --name "endless balanced"
python -m benchmarks.long_run --sampler teacher-6x3 --name "endless teacher, DDIM 6 x 3"
python -m benchmarks.long_run --sampler stream --name "streaming student (stream)"
