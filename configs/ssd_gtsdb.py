"""SSD (MobileNet-style backbone) on the German Traffic Sign Detection Benchmark, ε = 1 mAP point.

    python -m afp_tf.main --config ssd_gtsdb --workdir runs/ssd_gtsdb
    python -m afp_tf.main --config ssd_gtsdb --workdir runs/ssd --config.prune.tolerance=0.01
    python -m afp_tf.main --config ssd_gtsdb:quick --workdir runs/quick

Data: FullIJCNN2013 (900 PPM images 1360x800, gt.txt) in --config.data.data_dir (default
~/.cache/afp_tf/gtsdb), downloaded from --config.data.url when online. First 600 images train
(20 % of them validate), last 300 test; 4 super-categories (--config.data.labels=classes for
all 43). Decision metric: mAP@0.5 on validation over the three categories the GTSDB
competition scores (prohibitory, danger, mandatory), the four-category map50_all beside it
(--config.data.scoring=all decides on all four). Without the files and without network the
run stops with an error saying where to put the archive.

Scale: the signs' own. Training takes 192 px crops of the frames at native resolution (four
per frame and epoch, sign-aware plus 20 % anywhere); validation, test and the exported
artifacts run the fully convolutional model on the full 1360x800 frame (33.9 GMACs at width 1;
1.15 GMACs per 192 px crop). Default boxes: strides 8-64, three sizes per octave, 16-203 px.

Expected runtime (an estimate, not a measured run): on this project's shared 2-core CPU a
training step cost 1.24 s per crop and a full-frame forward pass 11.9 s (measured with other
jobs running), so one epoch (1920 crops + 120 validation frames) takes about 1.1 h and the
whole run (60 baseline epochs, up to 20 pruning rounds of 1 + 3 epochs, 10 fine-tuning
epochs, export) days: use an accelerator. On one current GPU, assuming an effective 2 TMAC/s
for this depthwise-heavy network, an epoch (6.6 TMAC of training, 4.1 TMAC of validation) is
about 5 s plus input reading, the whole run roughly 30-60 minutes.
"""

from afp_tf.run import config_lib


def get_config(arg=None):
    c = config_lib.detection_config()
    c.name = "ssd_gtsdb"
    c.model.backbone = "mobilenet"
    c.model.width = 1.0
    c.model.min_size = 16
    c.model.max_size = 128
    c.model.scales_per_octave = 3
    c.data.source = "auto"
    c.data.scoring = "competition"  # mAP over prohibitory, danger, mandatory
    c.data.image_size = 192  # training crop side, native resolution
    c.data.crops_per_image = 4
    c.data.negative_crops = 0.2
    c.data.val_fraction = 0.2
    c.data.eval_batch_size = 4
    c.train.baseline_epochs = 60
    c.prune.shrink_epochs = 1
    c.prune.recovery_epochs = 3
    c.prune.max_rounds = 20
    c.prune.finetune_epochs = 10
    c.export.formats = "saved_model,tflite_fp32,tflite_fp16,tflite_int8,onnx"
    c = config_lib.with_arg(c, arg)
    if arg == "quick":  # a smoke run: an almost untrained detector, so a loose ε
        c.model.width = 0.25
        c.data.image_size = 128
        c.prune.tolerance = 0.5  # absolute: a barely trained detector's mAP is near 0
    return c
