#!/bin/bash
# The VGG-16 and ResNet-56 (CIFAR form, Fashion-MNIST padded to 32×32) seeds benchmarks as run
# on the shared 2-core CPU: per seed 0,1,2 a baseline, afp_tf at ε = 0.01, then uniform_l1 pruned
# to afp_tf's MACs with afp_tf's epoch budget; VGG-16's seeds in one process, ResNet-56's in
# another, side by side (one resumable workdir per network); every run rewrites
# benchmarks/results/seeds_<config>.json from every finished run.
#
# This is the second run of the recipe below, with afp_tf's BatchNorm-aware round (importance
# from BatchNorm scale/offset, candidates faded to zero, statistics recalibrated, recovery
# annealed: the library defaults). Its baselines are the first run's: each seed's baseline
# directory was copied from runs/seeds_<net>_cosine (trained by this script's first version,
# the same arguments) into the new workdir, where the pipeline resumes it as finished.
# Changed from the first run, chosen on VGG-16 seed 0's acceptance numbers (probes discarded):
# prune.p_max 0.3 -> 0.1 (a 30% round failed even with the new round: 84.1% accept against a
# 87.6% floor) and more rounds (VGG-16 6, ResNet-56 4), since rounds are now small.
#
# The training step, profiled first (batch 64, 20 steps on 1,280 images, best of 2 epochs after a
# warm-up one, load average 2.4-6.3 on the 2 cores): afp_tf's Trainer is not the slow part.
#   VGG-16 ×0.125: Trainer 158 ms/step, keras model.fit 257, Trainer without the orthogonality
#   penalty 257, with train.jit_compile 229, with train.steps_per_execution=8 187; evaluating
#   1,000 images 0.7-0.9 s (0.3 s with XLA).
#   ResNet-56 ×0.25: Trainer 513 ms/step, without the orthogonality penalty 1,028, model.fit 1,027;
#   evaluating 1,000 images 3.3-8.3 s (model.fit's evaluate 4.6 s).
# The spread is the shared CPU's load, not the options. What a new Trainer does cost is tracing
# its steps: ResNet-56's first training step took 74 s (45 s with orth.beta=0) against 1.4-2.7 s
# for the next, its first evaluation 11-16 s against 1.3-2.6 s (isolated: tracing the model's
# gradient 21.5 s, the orthogonality penalty's 7.2 s); every pruning round (new model after
# surgery) pays it once. An earlier run's "2 s per step" was the machine's load (5-9 here).
#
# Recipe, chosen on seed 0's validation/acceptance numbers:
#   - the baselines train with a cosine learning rate after 1 epoch of linear warmup
#     (train.lr_schedule=cosine, train.warmup_epochs=1): VGG-16 seed 0 reached 88.7% val after
#     10 epochs on 6,000 images (the earlier constant-rate 8 epochs on 3,000: 72.0%); ResNet-56
#     on 3,000 images reached 83.7%, 79.5%, 83.6% (seeds 0-2) after 8, short of ~88% (its val
#     stays at 10-36% for the first 3-5 epochs while train accuracy is already 54-81%);
#   - recovery and fine-tuning at a tenth of the baseline's rate (prune.learning_rate): from an
#     annealed baseline, a quarter of it (0.005 for VGG-16) left seed 0's 1% retry round at
#     86.7% acceptance accuracy against an 87.6% floor after 4 recovery epochs, so afp_tf
#     accepted no round (that attempt was discarded; at 0.002 the same retry reached 88.0%).
# Reductions from the paper's setting (CIFAR-10, full width, full data, 160+ epochs), from epoch
# times measured here under load:
#   - data: Fashion-MNIST padded to 32×32 (one channel) instead of CIFAR-10, no augmentation;
#   - width: VGG-16 ×0.125 (8-16-32-64-64 conv channels, dense 64), ResNet-56 ×0.25 (4-8-16
#     channels per stage). Full width does not fit: a VGG-16 ×0.125 baseline epoch on 6,000 images
#     took 11-38 s (load 5-9), and per 32×32 image VGG-16 ×1.0 has 312.3 M MACs against 4.9 M
#     (63×, so roughly 20 minutes an epoch); a ResNet-56 ×0.25 epoch on 3,000 images took
#     56-120 s, and ×1.0 has 125.5 M MACs against 7.9 M (16×);
#   - subsets (all but test carved from the training split; the accept split only decides):
#     VGG-16 6,000 train / 1,000 val / 6,000 accept / 5,000 test (not the 20,000 train images
#     asked for: 3.3× the epoch time, and three seeds of both methods would not end in time);
#     ResNet-56 3,000 train / 1,000 val / 3,000 accept / 5,000 test;
#   - VGG-16: 10 baseline epochs, at most 6 pruning rounds, 2 recovery and 2 fine-tune epochs;
#     ResNet-56: 8 baseline epochs, at most 4 rounds, 1 recovery and 1 fine-tune epoch;
#   - methods afp_tf and uniform_l1 only (global_l1 and the ablations: not in the time);
#   - ResNet-56 ran seed 0 in one process, which was stopped (SIGTERM) as seed 1 began, and
#     seeds 1 and 2 then each in its own process (RESNET_SEEDS="1 2" NETS=resnet56);
#   - VGG-16 seed 0's afp_tf run was started first on its own (`--seeds 0 --methods afp_tf`, the
#     same arguments) and the VGG process ran VGG_SEEDS=1,2,0 (seed 0's afp_tf read back); the
#     result file's `command` is the last process to write it.
# Run from the repository root: PYTHON=.venv/bin/python benchmarks/seeds_cifar_form_cpu.sh
# (NETS="vgg16 resnet56" by default; METHODS=afp_tf,uniform_l1 by default; VGG_SEEDS is one
# process's seed list, RESNET_SEEDS a space-separated list of them, one process each).
set -e
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
METHODS=${METHODS:-afp_tf,uniform_l1}
COMMON=(--tolerances 0.01 --methods "$METHODS" --override prune.tolerance=0.01
        --override data.val_subset=1000 --override data.test_subset=5000
        --override data.accept_fraction=0.1 --override train.progress=false
        --override train.lr_schedule=cosine --override train.warmup_epochs=1)
VGG16=(--workdir runs/seeds_vgg16_fade --override model.width=0.125
       --override data.train_subset=6000 --override train.baseline_epochs=10
       --override prune.max_rounds=6 --override prune.learning_rate=0.002
       --override prune.p_max=0.1)
RESNET56=(--workdir runs/seeds_resnet56_fade --override model.width=0.25
          --override data.train_subset=3000 --override data.accept_subset=3000
          --override train.baseline_epochs=8 --override prune.max_rounds=4
          --override prune.recovery_epochs=1 --override prune.finetune_epochs=1
          --override prune.learning_rate=0.005 --override prune.p_max=0.1)
launch() {  # NET SEEDS ARGS...: one process for these seeds (never two processes on one seed)
  local net=$1 seeds=$2; shift 2
  "$PYTHON" benchmarks/seeds.py "${net}_fashion_mnist" "${COMMON[@]}" --seeds "$seeds" "$@" \
    > "runs/seeds_$net.cosine.seeds${seeds//,/_}.log" 2>&1 &
}
for net in ${NETS:-vgg16 resnet56}; do
  case $net in
    vgg16) launch vgg16 "${VGG_SEEDS:-0,1,2}" "${VGG16[@]}" ;;
    resnet56) for seeds in ${RESNET_SEEDS:-0,1,2}; do launch resnet56 "$seeds" "${RESNET56[@]}"; done ;;
    *) echo "unknown net $net (vgg16 | resnet56)" >&2; exit 2 ;;
  esac
done
wait
