"""Object detection for afp_tf: SSD anchors, loss, decoding, mAP and the detection task.

Modules: ``anchors`` (SSD default boxes, offset encoding), ``loss`` (``SSDLoss``: matching with
keras-cv ``BoxMatcher``, smooth-L1 + cross-entropy with 3:1 hard negatives), ``decode``
(keras-cv ``MultiClassNonMaxSuppression``), ``metrics`` (COCO-style mAP@[.5:.95] and mAP@0.5),
``task`` (config -> data, SSD builder, loss, evaluation), ``export`` (artifacts with mAP checks
and built-in NMS where the runtime has it), ``kerascv`` (pruning the backbone of
keras-cv RetinaNet / YOLOV8Detector).
"""

from afp_tf import extras

extras.require("keras_cv", "afp_tf.detection (SSD loss, matching and NMS)")
