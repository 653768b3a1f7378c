#!/usr/bin/env bash
# The GPU benchmarks of one session as a single script (see ../shared/reference/gpu.md for the machine): the wheels
# in .whl/ (downloaded here by benchmarks/gpu_wheels.sh) installed into /tmp/site, then each benchmark under its own timeout, results
# and logs written to $OUT. Run from the project root: `OUT=/tmp/gpu bash benchmarks/gpu_round.sh`.
set -u
OUT=${OUT:?set OUT to the folder for results}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 EARTHVL_CACHE=/tmp/evc PYTHONUNBUFFERED=1
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers, trl, peft, bitsandbytes, datasets; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__, 'bitsandbytes', bitsandbytes.__version__, 'datasets', datasets.__version__)"
  nproc
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
# Every module the benchmarks import, before any device time goes into one that would fail at import.
if ! python3 -c "import sys; sys.path.insert(0, 'benchmarks'); import train_vlm, train_clip, eval_throughput" > "$OUT/imports.log" 2>&1; then
  tail -n 5 "$OUT/imports.log"; echo "== a benchmark does not import: missing wheel? (benchmarks/gpu_wheels.sh)"; exit 3
fi
step() {  # step NAME SECONDS COMMAND...: one benchmark, its log in $OUT/NAME.log, its last lines shown
  local name=$1 seconds=$2; shift 2
  local start=$SECONDS
  timeout "$seconds" "$@" > "$OUT/$name.log" 2>&1
  echo "== $name: exit $? after $((SECONDS - start)) s"
  grep -E "SUMMARY|Error|error:" "$OUT/$name.log" | tail -5
  tail -n 12 "$OUT/$name.log"
}
step train_vlm 230 python3 benchmarks/train_vlm.py --rows stock earthvl vision_no_grad padding_free ckpt_every_2_budget --out "$OUT/train_vlm.json"
step train_clip 130 python3 benchmarks/train_clip.py --model b32 --variants earthvl no-cudnn-attention old-recipe --out "$OUT/train_clip.json"
step eval_embed 80 python3 benchmarks/eval_throughput.py --measure embed classify --num_workers 8 --work_dir /tmp/earthvl-bench-train-clip --out "$OUT/eval_embed.json"
