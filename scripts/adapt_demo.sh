#!/usr/bin/env bash
# The README's adaptation loop (README: "Adapt LISA to your robot's scenes"), on the sample bag:
# replay the bag through lisa_node (answers before), export them for annotation, import labels
# (here the bag's own ground truth stands in for the labels a person corrects in CVAT), fine-tune
# a LoRA adapter with LISA's recipe, replay again with the adapter served by the node over DDS
# (answers after), and score both against the ground truth.
#
# On the CPU with the tiny generated checkpoint (as scripts/demo.sh): the numbers show the loop
# works, not LISA's quality, and "after" is scored on frames the adapter was trained on (the
# sample bag has 10 instructions). The held-out figure is benchmarks/finetune_shapes.py's. The
# learning rate is 10x LISA's 3e-4 because the tiny checkpoint's SAM decoder starts random, not
# pretrained; for real LISA weights keep the recipe's defaults (FINETUNE_ARGS="--device cuda ...").
#
# Usage: scripts/adapt_demo.sh [OUT_DIR]    (default results/adapt; replaced if it exists)
#        LISA_MODEL=DIR_OR_ID LISA_CONFIG=config/lisa.yaml FINETUNE_ARGS="--device cuda --precision int4" ...
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="${1:-results/adapt}"
config="${LISA_CONFIG:-config/lisa_cpu.yaml}"
model="${LISA_MODEL:-}"
read -r -a finetune_args <<< "${FINETUNE_ARGS:---epochs 20 --grad-accumulation 1 --lr 3e-3}"

bash scripts/setup.sh
# shellcheck source=ros_env.sh
source scripts/ros_env.sh --isolated
lisa_ros() { python -P -m lisa_ros.tools.cli "$@"; }
if [ -z "$model" ]; then
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
  model="$repo/.cache/lisa-tiny/lisa-tiny-7b"
  if [ ! -f "$model/config.json" ]; then
    rm -rf "$repo/.cache/lisa-tiny"
    lisa_ros make-tiny-checkpoint "$repo/.cache/lisa-tiny"
  fi
fi
rm -rf "$out"
step() { printf '\n==> %s\n' "$*"; }

step "1. replay the bag through lisa_node: the answers before adaptation"
lisa_ros replay data/sample_bag --output "$out/before" --start-node --node-params "$config" \
  --node-param "model.path:=$model"
step "2. export them for annotation (COCO RLE for CVAT, LISA's ReasonSeg JSON)"
lisa_ros export-labels "$out/before" --out "$out/labels"
step "3. import labels into a training set (the bag's ground truth stands in for corrected labels)"
lisa_ros import-labels --out "$out/dataset" --results "$out/before" --gt-bag data/sample_bag --split-window-s 2
step "4. fine-tune a LoRA adapter (LISA's recipe)"
lisa_ros finetune "$out/dataset" --model "$model" --out "$out/sample-adapter" "${finetune_args[@]}"
step "5. replay with the adapter served by lisa_node (model.adapter)"
lisa_ros replay data/sample_bag --output "$out/after" --start-node --node-params "$config" \
  --node-param "model.path:=$model" --node-param "model.adapter:=$out/sample-adapter/adapter"
step "6. score before and after against the bag's ground truth"
lisa_ros eval "$out/before" --gt-bag data/sample_bag --note "before adaptation: $model"
lisa_ros eval "$out/after" --gt-bag data/sample_bag --note "after adaptation: $model + $out/sample-adapter/adapter"
