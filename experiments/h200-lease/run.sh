#!/usr/bin/env bash
# One H200 lease (15 minutes of device time, one command of at most 10): the four recipes beside this
# file trained side by side on the one GPU, then their model folders and logs written to $OUT.
#
# Before the lease, on the CPU machine, pack the data the recipes name (the slim manifests: train and
# validate records without their renderer notes, and the token stores):
#   python experiments/h200-lease/pack_data.py --out .devicedata/e6.tgz
# and run this with `.devicedata` carried:  bash experiments/h200-lease/run.sh
# After it, for each run: cat RUN.tar.part-* | tar x -C runs/h200/RUN; cp -r checkpoints/llmcxr-tiny/vq runs/h200/RUN/model/
set -u
OUT=${OUT:-runs/h200-out}
RUNS=${RUNS:-"continue deeper wider wider-stem"}
DEADLINE=${DEADLINE:-530}  # seconds after start: runs still going are stopped and their last checkpoint kept
start=$SECONDS
mkdir -p "$OUT" runs/h200
tar xzf .devicedata/e6.tgz
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > runs/h200/gpu.txt 2>&1
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  >> runs/h200/gpu.txt

declare -A pid
for run in $RUNS; do
  python3 -m llmcxr.cli.train_entry --config "experiments/h200-lease/$run.yaml" > "runs/h200/$run.log" 2>&1 &
  pid[$run]=$!
done

running() { for run in $RUNS; do kill -0 "${pid[$run]}" 2>/dev/null && return 0; done; return 1; }
while running && (( SECONDS - start < DEADLINE )); do sleep 5; done

for run in $RUNS; do
  if kill -0 "${pid[$run]}" 2>/dev/null; then  # out of time: keep the last checkpoint as the model
    kill "${pid[$run]}"; wait "${pid[$run]}" 2>/dev/null
    last=$(ls -d "runs/h200/$run"/checkpoint-* 2>/dev/null | sort -t- -k2 -n | tail -1)
    echo "stopped at the deadline; exporting ${last:-nothing}" >> "runs/h200/$run.log"
    [ -n "$last" ] && python3 -m llmcxr.cli export-checkpoint "$last" --out "runs/h200/$run/model" \
      >> "runs/h200/$run.log" 2>&1
  fi
  if [ -d "runs/h200/$run/model" ]; then  # the VQ-GAN stays behind: it is checkpoints/llmcxr-tiny/vq
    tar cf "$OUT/$run.tar" --exclude=model/vq -C "runs/h200/$run" model
    split -b 15m -d "$OUT/$run.tar" "$OUT/$run.tar.part-" && rm "$OUT/$run.tar"
  fi
done
tar czf "$OUT/logs.tgz" runs/h200/*.log runs/h200/gpu.txt runs/h200/*/train_log.json runs/h200/*/recipe.json \
  runs/h200/*/checkpoint-*/trainer_state.json \
  2>/dev/null
echo "done in $((SECONDS - start)) s"; ls -l "$OUT"
tail -n 3 runs/h200/*.log
