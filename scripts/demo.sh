#!/usr/bin/env bash
# The README's demo: set up, replay the sample bag (data/sample_bag) through a
# lisa_node over ROS 2 (lock-step) with depth.enabled (the bag's aligned depth and
# camera info go to the node, which answers each mask with a 3D target), score the
# masks and the 3D targets against the bag's ground truth (masks, positions) and
# write the report; then the same frames in semantic mode (one label
# image per frame for data/sample_labels/categories.txt), scored against
# data/sample_labels into a second report.
#
# By default the node runs the LISA engine on the CPU with a tiny checkpoint
# generated here (.cache/lisa-tiny, written once, under a minute): its masks
# are MEANINGLESS; the demo shows the pipeline, not LISA's quality.
# Real LISA weights on a GPU (one line):
#   LISA_MODEL=xinlai/LISA-7B-v1 LISA_CONFIG=config/lisa.yaml scripts/demo.sh
#
# Usage: scripts/demo.sh [RESULTS_DIR]    (default results/demo; replaced if it exists)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="${1:-results/demo}"
config="${LISA_CONFIG:-config/lisa_cpu.yaml}"
model="${LISA_MODEL:-}"
semantic_params=()

bash scripts/setup.sh
# shellcheck source=ros_env.sh
source scripts/ros_env.sh --isolated
lisa_ros() { python -P -m lisa_ros.tools.cli "$@"; }

if [ -z "$model" ]; then
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
  model="$repo/.cache/lisa-tiny/lisa-tiny-7b"
  if [ ! -f "$model/config.json" ]; then
    printf '\n==> tiny LISA checkpoint (random weights, CPU; once)\n'
    rm -rf "$repo/.cache/lisa-tiny"
    lisa_ros make-tiny-checkpoint "$repo/.cache/lisa-tiny"
  fi
  # The tiny model was never taught the filter's question: its P(yes) is about the same for every category and
  # frame, and which side of 0.5 it lands on depends on the seed (benchmarks/results/tiny_filter_p_yes.json:
  # all kept, none, or a random few). Off, so the label images show the masks whatever the seed.
  semantic_params=(--node-param "semantic.filter_threshold:=0.0")
  note="Demo run: a tiny random LISA checkpoint (make-tiny-checkpoint) on the CPU, fp32: its masks and label images, so every number in this report, are MEANINGLESS. For real LISA weights on a GPU: LISA_MODEL=xinlai/LISA-7B-v1 LISA_CONFIG=config/lisa.yaml scripts/demo.sh"
else
  note="Masks from $model ($config)."
fi

printf '\n==> replay data/sample_bag through lisa_node (engine lisa, model %s; depth.enabled: 3D targets)\n' "$model"
rm -rf "$out"
set +e
lisa_ros replay data/sample_bag --output "$out" --start-node --node-params "$config" --node-param "model.path:=$model" \
  --node-param depth.enabled:=true
replay_code=$?
set -e
[ -f "$out/results.jsonl" ] || exit "$replay_code"

printf '\n==> eval against /ground_truth/mask and /ground_truth/position\n'
lisa_ros eval "$out" --gt-bag data/sample_bag --note "$note"

printf '\n==> 3D targets (~/targets_3d: centroid of the best mask, metres, depth optical frame)\n'
python - "$out/report/per_sample.csv" <<'PY'
import csv, sys
for row in csv.DictReader(open(sys.argv[1], encoding="utf-8")):
    found = f"({row['position_m'].replace(' ', ', ')})" if row["position_m"] else f"no point: {row['position_status']}"
    truth = f"truth ({row['truth_position_m'].replace(' ', ', ')})" if row["truth_position_m"] else "no target there"
    error = f", error {float(row['position_error_m']):.3f} m" if row["position_error_m"] else ""
    print(f"  #{row['request']} frame {row['frame_index']}: {found[:90]}; {truth}{error}")
PY

printf '\n==> semantic replay of data/sample_bag (categories: data/sample_labels/categories.txt)\n'
# The descriptions the LLM writes go into the run's folder, not the user's ~/.cache (absolute: the node's cwd).
description_cache="$(cd "$out" && pwd)/semantic/descriptions.json"
set +e
lisa_ros replay data/sample_bag --output "$out/semantic" --semantic-file data/sample_labels/categories.txt \
  --start-node --node-params "$config" --node-param "model.path:=$model" "${semantic_params[@]}" \
  --node-param "semantic.description_cache:=$description_cache"
semantic_code=$?
set -e
[ -f "$out/semantic/results.jsonl" ] || exit "$semantic_code"

printf '\n==> eval against data/sample_labels\n'
lisa_ros eval "$out/semantic" --gt-labels data/sample_labels --note "$note"

model_ids="$(python -c 'import json,sys; print(", ".join(json.load(open(sys.argv[1]))["model_ids"]) or "unknown")' "$out/summary.json")"
printf '\n==> done\n'
printf 'instruction report: %s/report/report.md (worst_cases.png, iou_histogram.png, latency_histogram.png, ' "$out"
printf 'per_sample.csv)\n'
printf 'semantic report:    %s/semantic/report/report.md (semantic_confusion.png; per-class IoU, mIoU)\n' "$out"
printf 'results:            %s/results.jsonl, masks/, overlays/, bag/; %s/semantic/results.jsonl, labels/, bag/, ' \
  "$out" "$out"
printf 'descriptions.json\n'
printf 'masks made by: %s\n' "$model_ids"
if [ -z "${LISA_MODEL:-}" ]; then
  printf 'The tiny checkpoint has random weights: the IoU and mIoU numbers in both reports are MEANINGLESS.\n'
fi
printf '%s\n' "$note"
[ "$replay_code" -ne 0 ] && exit "$replay_code"
exit "$semantic_code"
