"""SSD (MobileNet-style backbone) on a synthetic set in the GTSDB layout: the offline CPU demo.

    python -m afp_tf.main --config ssd_gtsdb_synthetic --workdir runs/ssd_synthetic
    python -m afp_tf.main --config ssd_gtsdb_synthetic:quick --workdir runs/quick

The images are generated (sign-like shapes of the four GTSDB super-categories on cluttered
backgrounds, written as PPM files with a gt.txt) into data.data_dir on first use; this config
names that explicitly — real GTSDB is never replaced by synthetic data silently.

Sized for a CPU: input 192 (signs of 16-128 px in a 1360-px frame become 2-18 px), width 0.5,
ε = 3 mAP@0.5 points. ``:quick`` is a smoke run (a few minutes on a shared CPU, mAP near zero):
one round with a 90 % relative tolerance, so that a barely trained detector's small mAP still
leaves room to remove filters.
"""

from afp_tf import config_lib


def get_config(arg=None):
    c = config_lib.detection_config()
    c.name = "ssd_gtsdb_synthetic"
    c.data.source = "synthetic"
    c.data.data_dir = "~/.cache/afp_tf/gtsdb_synthetic"
    c.data.image_size = 192
    c.model.backbone = "mobilenet"
    c.model.width = 0.5
    c.data.val_fraction = 0.15
    c.train.baseline_epochs = 24
    c.prune.tolerance = 0.03
    c.prune.p_max = 0.1  # an undertrained small detector collapses when 20 % go at once
    c.prune.max_rounds = 6
    c.prune.recovery_epochs = 8  # recovery stops early once the metric is back
    c.prune.finetune_epochs = 2
    c.export.formats = "saved_model,tflite_fp32,tflite_fp16,onnx"
    c = config_lib.with_arg(c, arg)
    if arg == "quick":
        c.data.synthetic_images = 128
        c.data.image_size = 128
        c.model.width = 0.25
        c.train.baseline_epochs = 12
        c.prune.max_rounds = 1
        c.prune.relative = True
        c.prune.tolerance = 0.9
        c.prune.recovery_margin = 0.0  # keep a removal that stays above the floor as it is
        c.prune.finetune_epochs = 0
        c.export.formats = "tflite_fp32,onnx"
        c.export.latency_runs = 5
    return c
