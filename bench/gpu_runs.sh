#!/usr/bin/env bash
# FFN figures on a GPU machine, in one go (bench-only; CI never runs it).
#
# Runs, working in $WORK (default /tmp/connectome-gpu) and packing the results into $OUT/results.tar
# and the two trained models into $OUT/models.tar:
#   1. bench/ffn_inference_bench.py: per-step timings and the crop segmented in fp32 and on the fastest path;
#   2. bench/ffn_training_bench.py --gpu-only: training examples/s of our loop;
#   3. in parallel on the one GPU:
#      - bench/ffn_parity.py --complete --direct: Google's checkpoint over the whole FIB-25 cube (fp32);
#      - bench/ffn_train_fib25.py: from-scratch training and fine-tuning of Google's model on z < 150,
#        then each model (and Google's) segments the held-out z >= 150 block.
# Scoring needs kimimaro and the full install: unpack both tars into a folder R here and run
#   .venv/bin/python bench/ffn_parity.py --complete --load-npz R/parity-complete.npz
#   .venv/bin/python bench/ffn_train_fib25.py --out R/fib25 --stages score
# Issue 4's open figures alone (from-scratch quality, fine-tuning that does not regress), e.g.:
#   RUN_BENCHES=0 RUN_PARITY=0 SCRATCH_MINUTES=7 FINETUNE_MINUTES=7 \
#     FIB25_ARGS="--scratch-config bench/fib25_cpu_scratch_cosine.toml --finetune-config FT.toml" bench/gpu_runs.sh
# (FT.toml: a [training] table, e.g. learning_rate and ema_decay)
# Needs python3 with CUDA torch, h5py, scipy, scikit-image and tqdm; fastremap (and any other
# missing wheel) from .whl/; the data in $CONNECTOME_DATA laid out as ../shared/data.
set -u
WORK=${WORK:-/tmp/connectome-gpu}
OUT=${OUT:-$WORK/out}
SCRATCH_MINUTES=${SCRATCH_MINUTES:-4}
FINETUNE_MINUTES=${FINETUNE_MINUTES:-2.5}
PARITY_MINUTES=${PARITY_MINUTES:-5.5}
JOB_SECONDS=${JOB_SECONDS:-420}  # hard limit on each parallel job, so the results are always packed
PY=${PY:-python3}
RUN_BENCHES=${RUN_BENCHES:-1}  # 0: skip the inference and training speed benches
RUN_PARITY=${RUN_PARITY:-1}  # 0: skip Google's checkpoint over the whole cube
INFERENCE_ARGS=${INFERENCE_ARGS:---rounds 20 --batch 8 --fast-segmentation}
FIB25_ARGS=${FIB25_ARGS:-}  # e.g. a smaller --eval-bbox and --max-segments for a smoke test on CPU
export PYTHONUNBUFFERED=1
mkdir -p "$WORK/fib25" "$OUT"
cd "$(dirname "$0")/.."

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

if [ "$RUN_BENCHES" = 1 ]; then
    $PY bench/ffn_inference_bench.py $INFERENCE_ARGS 2>&1 | tee "$WORK/inference.log"
    $PY bench/ffn_training_bench.py --gpu-only 2>&1 | tee "$WORK/training.log"
fi

fib25="$PY bench/ffn_train_fib25.py --out $WORK/fib25 --checkpoint-every 2000 $FIB25_ARGS"
$fib25 --stages "" >/dev/null  # imports Google's model once, before the parallel jobs read it
if [ "$RUN_PARITY" = 1 ]; then
    timeout "$JOB_SECONDS" $PY bench/ffn_parity.py --complete --direct --max-minutes "$PARITY_MINUTES" \
        --save-npz "$WORK/parity-complete.npz" >"$WORK/parity.log" 2>&1 &
fi
timeout "$JOB_SECONDS" $fib25 --stages scratch,segment --models scratch --budget-minutes "$SCRATCH_MINUTES" >"$WORK/scratch.log" 2>&1 &
timeout "$JOB_SECONDS" $fib25 --stages finetune,segment --models finetune --budget-minutes "$FINETUNE_MINUTES" >"$WORK/finetune.log" 2>&1 &
timeout "$JOB_SECONDS" $fib25 --stages segment --models google >"$WORK/google.log" 2>&1 &
wait
for log in parity scratch finetune google; do [ -f "$WORK/$log.log" ] && echo "== $log" && tail -n 40 "$WORK/$log.log"; done
cd "$WORK" && tar cf "$OUT/results.tar" ./*.log ./*.npz fib25/*.npz fib25/*/metrics.jsonl 2>/dev/null
tar cf "$OUT/models.tar" fib25/*/model.pt fib25/*/best-model.pt 2>/dev/null
ls -la "$OUT"
