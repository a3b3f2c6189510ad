"""SSD (VGG-16 backbone, 300×300) on the German Traffic Sign Detection Benchmark, ε = 1 mAP point.

    python -m afp_tf.main --config ssd_gtsdb --workdir runs/ssd_gtsdb
    python -m afp_tf.main --config ssd_gtsdb --workdir runs/ssd --config.prune.tolerance=0.01
    python -m afp_tf.main --config ssd_gtsdb:quick --workdir runs/quick

Data: FullIJCNN2013 (900 PPM images, gt.txt) in --config.data.data_dir (default
~/.cache/afp_tf/gtsdb), downloaded from --config.data.url when online. First 600 images train
(validation carved from them), last 300 test; 4 super-categories (--config.data.labels=classes
for all 43). Decision metric: mAP@0.5 on validation. Needs an accelerator at full size. Without
the files and without network the run stops with an error saying where to put the archive.
"""

from afp_tf import config_lib


def get_config(arg=None):
    c = config_lib.detection_config()
    c.name = "ssd_gtsdb"
    c.model.backbone = "vgg16"
    c.data.source = "auto"
    c.train.baseline_epochs = 120
    c.prune.penalty_epochs = 2
    c.prune.recovery_epochs = 5
    c.prune.max_rounds = 20
    c.prune.finetune_epochs = 10
    c.export.formats = "saved_model,tflite_fp32,tflite_fp16,onnx"
    c = config_lib.with_arg(c, arg)
    if arg == "quick":  # a smoke run: an almost untrained detector, so a relative ε
        c.model.backbone = "mobilenet"
        c.model.width = 0.25
        c.data.image_size = 128
        c.prune.relative = True
        c.prune.tolerance = 0.5
    return c
