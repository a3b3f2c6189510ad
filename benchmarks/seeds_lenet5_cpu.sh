#!/bin/bash
# The LeNet-5 seeds benchmark as run on the shared 2-core CPU: one process per seed (afp_tf,
# uniform_l1, then the ablations at 1 point, then the other tolerances) plus one process per
# other tolerance running afp_tf alone, all on one workdir; every run resumes if killed, and
# each process rewrites benchmarks/results/seeds_lenet5_fashion_mnist.json from all finished
# runs. Reduced for CPU time: 5,000 training images, 3,000 val, 12,000 acceptance (20% of the
# training split), full 10,000-image test split, 15 baseline epochs.
set -e
cd "$(dirname "$0")/.."
WORKDIR=${WORKDIR:-runs/seeds_lenet}
COMMON=(--workdir "$WORKDIR" --override data.train_subset=5000 --override data.val_subset=3000
        --override data.accept_fraction=0.2 --override train.baseline_epochs=15
        --override train.progress=false)
for s in 0 1 2; do
  nohup nice -n 5 .venv/bin/python benchmarks/seeds.py lenet5_fashion_mnist --seeds $s \
    --tolerances 0.01,0.005,0.02 --ablation-tolerances 0.01 "${COMMON[@]}" \
    > "$WORKDIR.seed$s.log" 2>&1 &
done
# The other-tolerance processes share the seeds' baselines: start them once those are trained.
until [ -f "$WORKDIR/seed0/baseline/report.json" ] && [ -f "$WORKDIR/seed1/baseline/report.json" ] \
    && [ -f "$WORKDIR/seed2/baseline/report.json" ]; do sleep 30; done
for e in 0.005 0.02; do
  nohup nice -n 5 .venv/bin/python benchmarks/seeds.py lenet5_fashion_mnist --seeds 0,1,2 \
    --tolerances $e --methods afp_tf "${COMMON[@]}" > "$WORKDIR.eps$e.log" 2>&1 &
done
wait
