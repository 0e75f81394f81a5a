#!/usr/bin/env bash
# Issue #18's GPU measurements in one run, at paper size (160x192x96, batch 8), in two parts:
#   throughput: network paths, brainuad's train() with augmentation on and off, augmentation per volume (batched vs
#               MONAI), bf16 inference (benchmarks/train_throughput.py; ~4-5 min on an H100/H200);
#   variants:   where the compiled step's time goes (the convolutions' share and the ceiling it implies) and which
#               step variants pay: fused Adam, batch 16, compile modes (benchmarks/step_variants.py; <= 4 min).
#
#   bash benchmarks/gpu_check.sh                              # both parts, on the GPU machine, from the repository root
#   GPU_CHECK_PARTS=variants bash benchmarks/gpu_check.sh     # one part (fits a short device budget)
#   GPU_CHECK_SMALL=1 WHEELS=/tmp/whl311 OUT=benchmarks/out/gpu_dry bash benchmarks/gpu_check.sh    # CPU dry run
#
# The machine has torch, numpy, scipy, matplotlib, safetensors, tqdm, tensorboard and scikit-learn but no network:
# what else brainuad's training path imports (nibabel; monai for the before/after comparison; connected-components-3d
# for detection) travels as wheels in .whl/ (see benchmarks/README.md for how they were downloaded).
# Results go to $OUT as they are measured: results.jsonl, table.md, log.txt, env.txt.
set -uo pipefail
OUT=${OUT:-benchmarks/out/gpu_check}
WHEELS=${WHEELS:-.whl}
SITE=$(mktemp -d /tmp/site.XXXXXX)
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
  || for wheel in "$WHEELS"/*.whl; do python3 -m zipfile -e "$wheel" "$SITE"; done  # no pip: a wheel is a zip
export PYTHONPATH=$SITE:$PWD/src
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True

{
  date -u
  git rev-parse HEAD 2>/dev/null || echo "git: not a repository"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
  python3 -c "import brainuad.train.loop, nibabel, monai, cc3d; print('imports ok: brainuad.train.loop, nibabel', nibabel.__version__, 'monai', monai.__version__)"
  nproc
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

PARTS=${GPU_CHECK_PARTS:-throughput variants}
if [ "${GPU_CHECK_SMALL:-0}" = 1 ]; then
  # Reduced size for a CPU dry run (compile skipped there: minutes of C++ compilation on 2 cores).
  SMALL=(--shape 32 32 16 --batch-size 2 --steps 2 --warmup 1 --channels 4 8 8 8 --stem-channels 4 --latent 16
         --no-compile --threads 1)
  ARGS=("${SMALL[@]}" --cases 6 --epochs 3 --monai-volumes 2 --augment-reps 2 --inference-reps 1)
  VARIANT_ARGS=("${SMALL[@]}" --profile-steps 1)
  LIMIT=900
  VARIANT_LIMIT=900
else
  ARGS=(--steps 20 --warmup 3 --epochs 5 --cases 12 --monai-volumes 4 --augment-reps 4 --inference-reps 3)
  VARIANT_ARGS=(--steps 10 --warmup 3 --profile-steps 3)
  LIMIT=${GPU_CHECK_LIMIT:-330}
  VARIANT_LIMIT=${GPU_CHECK_VARIANT_LIMIT:-240}
fi
status=0
for part in $PARTS; do
  start=$(date +%s)
  case $part in
    throughput)
      timeout "$LIMIT" python3 benchmarks/train_throughput.py --loop "${ARGS[@]}" --out "$OUT" 2>&1 | tee "$OUT/log.txt"
      code=${PIPESTATUS[0]}; limit=$LIMIT; log=$OUT/log.txt ;;
    variants)
      timeout "$VARIANT_LIMIT" python3 benchmarks/step_variants.py "${VARIANT_ARGS[@]}" --out "$OUT/variants" 2>&1 \
        | tee "$OUT/variants_log.txt"
      code=${PIPESTATUS[0]}; limit=$VARIANT_LIMIT; log=$OUT/variants_log.txt ;;
    *) echo "unknown part: $part (throughput or variants)"; code=2; limit=0; log=/dev/null ;;
  esac
  echo "$part exit status $code after $(( $(date +%s) - start )) s (124 = stopped at ${limit} s)" | tee -a "$log"
  [ "$code" = 0 ] || status=$code
done
exit "$status"
