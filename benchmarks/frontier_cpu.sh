#!/bin/bash
# The frontier benchmarks as run on the shared 2-core CPU, one process at a time (two TensorFlow
# processes on 2 cores each run at well under half speed). Resumable: rerun the same command.
#
#   PYTHON=.venv/bin/python benchmarks/frontier_cpu.sh [vgg16_x0.5 ...]
#
# VGG-16 ×0.5 (CIFAR form, Fashion-MNIST padded to 32×32): 6,000 train / 1,000 val /
# 6,000 accept (decisions only) / 5,000 test images, a 12-epoch baseline (SGD, cosine learning
# rate after 1 warm-up epoch), pruning and fine-tuning at a tenth of the rate, at most 10
# rounds; afp_tf at ε = 0.005, 0.01, 0.02; uniform ℓ1 at fractions 0.2-0.6 and global ℓ1 at
# 1.5-6× fewer MACs, each fine-tuned for afp_tf's epochs at ε = 0.01 on the same seed; the
# afp_tf_endgame variant (near misses recover 2 more epochs, stop when under a quarter of the
# spendable tolerance is left or a round would save under 1 % of the MACs) at ε = 0.01; the
# afp_tf_lr_train variant (pruning and recovery at the training rate, 0.02, not a tenth of it)
# and its fair ladder row uniform_l1_lr_train (the uniform ladder fine-tuned at 0.02).
set -e
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
SEEDS=${SEEDS:-0,1,2}
CIFAR_FORM=(--override data.val_subset=1000 --override data.test_subset=5000
            --override data.accept_fraction=0.1 --override train.progress=false
            --override train.lr_schedule=cosine --override train.warmup_epochs=1)
run() {  # NAME CONFIG ARGS...
  local name=$1 config=$2; shift 2
  mkdir -p runs
  "$PYTHON" benchmarks/frontier.py "$config" --name "$name" --seeds "$SEEDS" \
    --workdir "runs/frontier_$name" "$@" >> "runs/frontier_$name.log" 2>&1
}
for name in ${@:-vgg16_x0.5}; do
  case $name in
    vgg16_x0.5) run "$name" vgg16_fashion_mnist "${CIFAR_FORM[@]}" \
        --override model.width=0.5 --override data.train_subset=6000 \
        --override train.baseline_epochs=12 --override prune.max_rounds=10 \
        --override prune.learning_rate=0.002 \
        --variant afp_tf_endgame:prune.extend_epochs=2,prune.min_headroom=0.25,prune.min_round_macs=0.01 \
        --variant afp_tf_lr_train:prune.learning_rate=0.02 \
        --ladder-variant uniform_l1_lr_train:prune.learning_rate=0.02 ;;
    *) echo "unknown frontier setting $name (vgg16_x0.5)" >&2; exit 2 ;;
  esac
done
