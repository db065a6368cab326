#!/usr/bin/env bash
# Every GPU check, one after another, each under its own time limit (together under ~12 minutes on one H100), the
# JSON of each under $OUT (or benchmarks/gpu/results/), and a summary.json of which passed.
#
#   bash benchmarks/gpu/run_all.sh
#
# UNTESTED: written on a CPU-only machine; none of these checks has run on a GPU yet (docs/performance.md).
set -u
cd "$(dirname "$0")/../.."
export OUT="${OUT:-$PWD/benchmarks/gpu/results}"
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi not found" > "$OUT/nvidia-smi.txt"
declare -A LIMIT=([lora_throughput]=240 [qlora]=240 [system_metrics]=90 [ddp]=120)
status="{"
for check in lora_throughput qlora system_metrics ddp; do
  start=$(date +%s)
  timeout "${LIMIT[$check]}" python "benchmarks/gpu/$check.py" > "$OUT/$check.log" 2>&1
  rc=$?
  echo "$check: exit $rc in $(( $(date +%s) - start )) s (log $OUT/$check.log)"
  status+="\"$check\": {\"exit\": $rc, \"seconds\": $(( $(date +%s) - start ))}, "
done
echo "${status%, }}" > "$OUT/summary.json"
cat "$OUT/summary.json"
