#!/usr/bin/env bash
# GPU training benchmark: BERT-base, seq 128 and 512, bfloat16, our JAX step, our torch Trainer and
# transformers' run_mlm.py set-up, one process per (length, implementation); then ModernBERT-base at 1,024
# and 8,192 tokens with packed documents, per attention backend and framework (JAX flash and cudnn, torch
# flash and sdpa: wwm/attention.py), one process per length; tokens/s and MFU against the chip's dense bf16
# peak (local layers' attention counted over their window: wwm/flops.py); writes summary.json and
# summary.md. Meant to stay under 8 minutes on one H100/H200 (the ModernBERT part has not been timed on a
# GPU yet: none was lent to its author).
#
#   bash benchmarks/gpu.sh                       # from the repository root
#   WWM_BENCH_TINY=1 bash benchmarks/gpu.sh      # tiny model, short lengths: a CPU smoke run (tests)
#
# Assumes (installs nothing): `pip install -e ".[dev]"` done, jax with CUDA (jax[cuda12]) and a CUDA
# torch build present, one visible GPU. Environment: WWM_BENCH_OUT (output folder, default
# benchmarks/results/gpu-<date>), PYTHON (default python), WWM_BENCH_PEAK (peak FLOP/s, overrides the
# table), WWM_BENCH_STEPS / WWM_BENCH_WARMUP (timed / warm-up steps).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${WWM_BENCH_OUT:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # jax must not take 75% of the GPU from torch

ATTN="flash,cudnn,sdpa"  # ModernBERT: each framework runs the names it has (JAX flash, cudnn; torch flash, sdpa)
if [[ "${WWM_BENCH_TINY:-0}" == 1 ]]; then
  # one process for all three implementations (separate processes on a GPU keep their memory apart)
  MODEL=tiny; DTYPE=${WWM_BENCH_DTYPE:-float32}; RUNS="64:4"; GROUPS_="jax,torch,hf_run_mlm"
  STEPS=${WWM_BENCH_STEPS:-2}; WARMUP=${WWM_BENCH_WARMUP:-1}
  MB_MODEL=modernbert-tiny; MB_RUNS="128:2"; MB_STEPS=1; MB_WARMUP=1; ATTN="flash"  # no cuDNN on a CPU
else
  # length:batch; 16k tokens per step at both lengths
  MODEL=base; DTYPE=${WWM_BENCH_DTYPE:-bfloat16}; RUNS="128:128 512:32"; GROUPS_="jax torch hf_run_mlm"
  STEPS=${WWM_BENCH_STEPS:-10}; WARMUP=${WWM_BENCH_WARMUP:-3}
  # ModernBERT-base, 16k tokens per step at both lengths; fewer steps: 4 (framework, backend) pairs a length
  MB_MODEL=modernbert-base; MB_RUNS="1024:16 8192:2"; MB_STEPS=${WWM_BENCH_MB_STEPS:-5}; MB_WARMUP=2
fi

# The chip and its dense bf16 peak (H100 SXM and H200: 989 TFLOP/s, A100: 312 TFLOP/s).
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 || true)
[[ -z "$GPU" ]] && GPU=$($PY -c "import jax; print(jax.devices()[0].device_kind)" 2>/dev/null || echo cpu)
PEAK=${WWM_BENCH_PEAK:-$($PY -m wwm.flops "$GPU")}  # the table in wwm/flops.py
echo "device: $GPU; peak: ${PEAK:-unknown (no MFU)}; model $MODEL, $DTYPE; out $OUT"

for run in $RUNS; do
  L=${run%%:*}; B=${run##*:}
  for impl in $GROUPS_; do
    echo "== L=$L B=$B $impl"
    $PY -m wwm_cli bench train --model "$MODEL" --seq-len "$L" --batch "$B" --dtype "$DTYPE" \
      --steps "$STEPS" --warmup "$WARMUP" --impls "$impl" ${PEAK:+--peak-flops "$PEAK"} --json \
      > "$OUT/train-L$L-${impl//,/-}.json"
  done
done

for run in $MB_RUNS; do
  L=${run%%:*}; B=${run##*:}
  echo "== $MB_MODEL L=$L B=$B packed documents, attention $ATTN"
  $PY -m wwm_cli bench train --model "$MB_MODEL" --seq-len "$L" --batch "$B" --dtype "$DTYPE" \
    --steps "$MB_STEPS" --warmup "$MB_WARMUP" --impls jax,torch --attn "$ATTN" --packing packed_documents \
    ${PEAK:+--peak-flops "$PEAK"} --json > "$OUT/modernbert-L$L.json"
done

$PY -m wwm_cli.bench.train summarize --device "$GPU" --out "$OUT" "$OUT"/train-L*.json "$OUT"/modernbert-L*.json
