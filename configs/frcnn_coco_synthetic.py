"""Faster R-CNN + FPN (light MobileNet-style backbone) on a synthetic COCO set: the CPU demo.

    python -m afp_tf.main --config frcnn_coco_synthetic --workdir runs/frcnn_synthetic
    python -m afp_tf.main --config frcnn_coco_synthetic:quick --workdir runs/quick

The images are generated into data.data_dir on first use (afp_tf.data.coco_synth: four
classes of coloured shapes, 16-72 px, on textured backgrounds; PNG files and COCO instances
json) and read back with the COCO-json reader; this config names that explicitly - COCO is
never replaced by synthetic data silently. 160 px images, 400 train (20 % of them validation)
and 100 test. Model: width 0.25, 32-channel FPN on strides 8-32, two anchor sizes x three
aspect ratios per level, 64 ROIs, 5x5 ROI Align, a 128-unit box head. epsilon = 1 mAP@0.5
point; pruning stops once MACs are at most 40 % of the baseline's.
``:quick`` is a smoke run (a minute or two on a shared CPU): 40 images of 64 px, one epoch, one
round with an absolute tolerance of 0.9 mAP points so that a barely trained detector still
loses filters.
"""

from afp_tf.run import config_lib


def get_config(arg=None):
    c = config_lib.frcnn_config()
    c.name = "frcnn_coco_synthetic"
    c.data.source = "synthetic"
    c.data.data_dir = "~/.cache/afp_tf/coco_synthetic"
    c.data.image_size = 160
    c.data.max_boxes = 8
    c.data.synthetic_train = 400
    c.data.synthetic_test = 100
    c.data.val_fraction = 0.2
    c.data.batch_size = 8
    c.data.eval_batch_size = 16
    c.model.backbone = "mobilenet"
    c.model.width = 0.25
    c.model.fpn_channels = 32
    c.model.num_rois = 64
    c.model.pre_nms = 300
    c.model.roi_size = 5
    c.model.head_units = 128
    c.model.min_size = 16
    c.model.scales_per_octave = 2
    c.model.aspect_ratios = "0.5,1,2"
    c.train.learning_rate = 2e-3
    c.train.baseline_epochs = 40
    c.orth.during_baseline = False
    c.orth.beta = 1e-4
    c.prune.tolerance = 0.01
    c.prune.macs_target = 0.4
    c.prune.max_rounds = 5
    c.prune.recovery_epochs = 3
    c.prune.finetune_epochs = 2
    c.export.formats = "saved_model,tflite_fp32,tflite_fp16,tflite_int8,onnx"
    c = config_lib.with_arg(c, arg)
    if arg == "quick":
        c.data.synthetic_train = 32
        c.data.synthetic_test = 8
        c.data.image_size = 64
        c.data.val_fraction = 0.25
        c.train.baseline_epochs = 1
        c.prune.max_rounds = 1
        c.prune.tolerance = 0.9  # absolute: a barely trained detector's mAP is near 0
        c.prune.recovery_margin = 0.0
        c.prune.finetune_epochs = 0
        c.export.formats = "tflite_fp32"
        c.export.samples = 8
        c.export.latency_runs = 2
    return c
