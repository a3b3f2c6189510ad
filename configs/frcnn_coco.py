"""Faster R-CNN + FPN (ResNet-50, built from config, no pretrained weights) on COCO 2017.

    python -m afp_tf.main --config frcnn_coco --workdir runs/frcnn_coco
    python -m afp_tf.main --config frcnn_coco:quick --workdir runs/frcnn_quick

Data: TFDS ``coco/2017`` (data.tfds_data_dir; about 25 GB, prepared by TFDS on first use when
data.download is true). train2017 minus its first 2,000 images trains, those 2,000 validate
(decisions), val2017 (5,000) is the reported test split. With data.source=local the COCO
archive layout under data.data_dir is read instead: annotations/instances_train2017.json
with train2017/, annotations/instances_val2017.json with val2017/.

512 px inputs (plain resize), 256 ROIs, 7x7 ROI Align, 1024-unit box head; RPN anchors of
32-181 px over strides 8-32 (two sizes x three aspect ratios per level). epsilon = 1 mAP@0.5
point.

Expected runtime: GPU-sized. Trained from scratch, one epoch over train2017 (14.5k steps of
8 images) takes about 1.5 h on one modern GPU, so the 24-epoch baseline is about 1.5 days and
each pruning round (1 penalty + up to 2 recovery epochs) a few hours; from pretrained
backbone weights (train.baseline_model) the baseline shrinks to a few epochs. Not runnable on
a CPU. ``:quick`` takes 2,048 / 512 / 512 images and 2 epochs (about 20 minutes on a GPU).
"""

from afp_tf.run import config_lib


def get_config(arg=None):
    c = config_lib.frcnn_config()
    c.name = "frcnn_coco"
    c.data.source = "auto"  # TFDS coco/2017; local = the COCO archive layout in data_dir
    c.data.data_dir = "~/.cache/afp_tf/coco"
    c.data.train_split = "train2017"
    c.data.test_split = "val2017"
    c.data.image_dir = "{split}"
    c.data.val_subset = 2000
    c.data.image_size = 512
    c.data.batch_size = 8
    c.train.optimizer = "sgd"
    c.train.learning_rate = 0.02
    c.train.momentum = 0.9
    c.train.weight_decay = 1e-4
    c.train.baseline_epochs = 24
    c.prune.tolerance = 0.01
    c.prune.shrink_epochs = 1
    c.prune.recovery_epochs = 2
    c.prune.max_rounds = 10
    c.prune.finetune_epochs = 2
    c.export.formats = "saved_model,tflite_fp32,tflite_fp16,onnx"
    return config_lib.with_arg(c, arg)
