#!/usr/bin/env bash
# Every command of experiments/iu-report-world, in order, from the repo root (resumable: rerun to continue).
# Needs ../shared/data/iu-xray (NLMCXR_reports.tgz and r2gen_split.json beside it).
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # one thread per job: the 2-core CPU is shared

# 1. The two worlds (64 px, the shipped tokenizer's size) and their tokens.
llmcxr data synth --n 3286 --size 64 --seed 9 --reports iu --split-by r2gen --out runs/iu/world-iu
llmcxr data synth --n 3000 --size 64 --seed 8 --reports templates --out runs/iu/world-templates
for world in iu templates; do
    llmcxr vq encode checkpoints/llmcxr-tiny/vq runs/iu/world-$world/manifest.jsonl runs/iu/tokens-$world \
        --num-workers 0 --no-progress
done

# 2. The scoring classifier of each world: its train split, seed 1, 400 steps (1,000: ~30 min a world here).
for world in iu templates; do
    llmcxr eval train-classifier --world runs/iu/world-$world --out runs/iu/classifier-$world \
        --steps 400 --seed 1
done

# 3. Both arms: the shipped model continued 400 steps, same recipe (side by side; add --resume to continue).
llmcxr train --config experiments/iu-report-world/recipes/iu-world.yaml &
llmcxr train --config experiments/iu-report-world/recipes/iu-world-templates-control.yaml &
wait

# 4. Reports on each world's test split, same settings; the shipped model unchanged on the IU test split.
evaluate() {  # model world out
    llmcxr eval run --model "$1" --data runs/iu/world-$2 --classifier runs/iu/classifier-$2 --out "$3" \
        --split test --tasks report --text-sampling greedy --report-guidance-scale 1.5 --meteor --threads 1
}
evaluate runs/iu/lm-iu/model iu runs/iu/eval-iu
evaluate runs/iu/lm-templates/model templates runs/iu/eval-templates
evaluate checkpoints/llmcxr-tiny iu runs/iu/eval-shipped-iu
evaluate checkpoints/llmcxr-tiny templates runs/iu/eval-shipped-templates

# 5. The table with intervals.
python experiments/iu-report-world/iu_world_table.py \
    --run templates=runs/iu/eval-templates --run iu_reports=runs/iu/eval-iu \
    --run shipped_on_iu_reports=runs/iu/eval-shipped-iu \
    --run shipped_on_templates=runs/iu/eval-shipped-templates \
    --paired iu_reports,shipped_on_iu_reports --paired templates,shipped_on_templates \
    --train templates=runs/iu/lm-templates --train iu_reports=runs/iu/lm-iu \
    --out benchmarks/results/eval_iu_world.json
