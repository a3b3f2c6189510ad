"""Coverage of channel surgery over the CNN families of keras.applications, keras-hub, keras-cv.

For each family, a small randomly initialised model (no downloads: keras-hub models from config,
keras-cv backbones from their weightless presets, small inputs) is analysed: channel groups,
prunable groups, *internal* groups (not tied to the model input or a model output) and the
prunable share of those, and the golden check: 25% of every prunable group removed, the
pruned model against the consumer-zeroing reference (largest relative error). Writes
``benchmarks/results/surgery_coverage.json`` and ``docs/surgery_coverage.md``.

    .venv/bin/python benchmarks/surgery_coverage.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import RESULTS, write_result  # noqa: E402

from afp_tf import io_utils, surgery  # noqa: E402
from afp_tf.surgery import golden  # noqa: E402

A = keras.applications


def _app(fn, size, **kwargs):
    return lambda: fn(weights=None, input_shape=(size, size, 3), classes=10, **kwargs)


def _hub_mobilenet():
    import keras_hub

    return keras_hub.models.MobileNetBackbone(
        stackwise_expansion=[[40, 56], [64, 144, 144], [72, 72], [144, 288, 288]],
        stackwise_num_blocks=[2, 3, 2, 3],
        stackwise_num_filters=[[16, 16], [24, 24, 24], [24, 24], [48, 48, 48]],
        stackwise_kernel_size=[[3, 3], [5, 5, 5], [5, 5], [5, 5, 5]],
        stackwise_num_strides=[[2, 1], [2, 1, 1], [1, 1], [2, 1, 1]],
        stackwise_se_ratio=[[None, None], [0.25] * 3, [0.3, 0.3], [0.3, 0.25, 0.25]],
        stackwise_activation=[["relu"] * 2, ["hard_swish"] * 3, ["hard_swish"] * 2]
        + [["hard_swish"] * 3],
        stackwise_padding=[[1, 1], [2, 2, 2], [2, 2], [2, 2, 2]],
        output_num_filters=288,
        depthwise_filters=8,
        depthwise_stride=2,
        depthwise_residual=False,
        last_layer_filter=288,
        squeeze_and_excite=0.5,
        image_shape=(64, 64, 3),
    )


def _hub_cspnet():
    import keras_hub

    return keras_hub.models.CSPNetBackbone(
        stem_filters=16,
        stem_kernel_size=3,
        stem_strides=2,
        stackwise_depth=[1, 2, 2],
        stackwise_strides=[1, 2, 2],
        stackwise_num_filters=[32, 64, 128],
        stage_type="csp",
        block_type="bottleneck_block",
        bottle_ratio=[0.5],
        expand_ratio=[2.0],
        image_shape=(64, 64, 3),
    )


def _hub_resnet():
    import keras_hub

    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 64, 64],
        stackwise_num_blocks=[2, 2, 2],
        stackwise_num_strides=[1, 2, 2],
        block_type="bottleneck_block",
        image_shape=(64, 64, 3),
    )


def _hub_vgg():
    import keras_hub

    return keras_hub.models.VGGBackbone(
        stackwise_num_repeats=[2, 2, 3], stackwise_num_filters=[16, 32, 64], image_shape=(32, 32, 3)
    )


def _hub_densenet():
    import keras_hub

    return keras_hub.models.DenseNetBackbone(
        stackwise_num_repeats=[2, 2, 2], growth_rate=8, image_shape=(32, 32, 3)
    )


def _hub_efficientnet():
    import keras_hub

    return keras_hub.models.EfficientNetBackbone(
        stackwise_kernel_sizes=[3, 3, 3, 3],
        stackwise_num_repeats=[1, 2, 2, 2],
        stackwise_input_filters=[16, 16, 24, 32],
        stackwise_output_filters=[16, 24, 32, 48],
        stackwise_expansion_ratios=[1, 4, 4, 4],
        stackwise_squeeze_and_excite_ratios=[0.0, 0.0, 0.25, 0.25],
        stackwise_strides=[1, 2, 2, 1],
        stackwise_block_types=["fused", "fused", "unfused", "unfused"],
        width_coefficient=1.0,
        depth_coefficient=1.0,
        input_shape=(32, 32, 3),
        num_features=64,
    )


def _hub_hgnetv2():
    import keras_hub

    return keras_hub.models.HGNetV2Backbone(
        depths=[1, 1, 2],
        embedding_size=16,
        hidden_sizes=[32, 64, 128],
        stem_channels=[3, 8, 16],
        hidden_act="relu",
        use_learnable_affine_block=False,
        stackwise_stage_filters=[
            (16, 8, 32, 1, 1, 3),
            (32, 16, 64, 1, 1, 3),
            (64, 32, 128, 1, 1, 3),
        ],
        apply_downsample=[False, True, True],
        use_lightweight_conv_block=[False, False, True],
        image_shape=(64, 64, 3),
    )


def _hub_classifier():
    import keras_hub

    return keras_hub.models.MobileNetImageClassifier(
        backbone=_hub_mobilenet(), num_classes=10, num_features=64
    )


def _hub_retinanet():
    import keras_hub

    image = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 32, 32, 32],
        stackwise_num_blocks=[1, 1, 1, 1],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="basic_block",
        image_shape=(64, 64, 3),
    )
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=image, min_level=3, max_level=5, use_p5=False, image_shape=(64, 64, 3)
    )
    anchors = keras_hub.layers.AnchorGenerator(
        "yxyx", min_level=3, max_level=5, num_scales=1, aspect_ratios=[1.0], anchor_size=4
    )
    return keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=3, anchor_generator=anchors, pre_logits_num_conv_layers=2
    )


def _hub_resnet_variant(**kwargs):
    def build():
        import keras_hub

        return keras_hub.models.ResNetBackbone(
            input_conv_kernel_sizes=[3] * len(kwargs.get("input_conv_filters", [16])),
            stackwise_num_filters=[64, 32],
            stackwise_num_blocks=[2, 2],
            stackwise_num_strides=[1, 2],
            image_shape=(32, 32, 3),
            **{"input_conv_filters": [16], **kwargs},
        )

    return build


def _hub_deeplab():
    import keras_hub

    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 64, 64],
        stackwise_num_blocks=[1, 1, 1],
        stackwise_num_strides=[1, 2, 2],
        block_type="basic_block",
        image_shape=(64, 64, 3),
    )
    return keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder,
        spatial_pyramid_pooling_key="P4",
        upsampling_size=4,
        dilation_rates=[2, 4],
        low_level_feature_key="P2",
        projection_filters=8,
        image_shape=(64, 64, 3),
    )


def _cv_yolov8_detector():
    import keras_cv

    backbone = keras_cv.models.YOLOV8Backbone(
        stackwise_channels=[16, 32, 64, 64],
        stackwise_depth=[1, 1, 1, 1],
        include_rescaling=False,
        input_shape=(64, 64, 3),
    )
    return keras_cv.models.YOLOV8Detector(
        backbone=backbone, num_classes=3, bounding_box_format="xywh", fpn_depth=1
    )


def _cv(name, **kwargs):
    def build():
        import keras_cv

        return getattr(keras_cv.models, name)(include_rescaling=False, **kwargs)

    return build


_EFFNET = dict(
    width_coefficient=1.0,
    depth_coefficient=1.0,
    stackwise_kernel_sizes=[3, 3, 5, 3],
    stackwise_num_repeats=[1, 2, 2, 1],
    stackwise_input_filters=[32, 16, 24, 40],
    stackwise_output_filters=[16, 24, 40, 48],
    stackwise_expansion_ratios=[1, 6, 6, 6],
    stackwise_strides=[1, 2, 2, 1],
    input_shape=(32, 32, 3),
)
_SE = [0.25] * 4
_CV_MOBILENET = dict(
    stackwise_expansion=[1, 72 / 16, 88 / 24, 4, 6, 6, 3, 3, 6, 6, 6],
    stackwise_filters=[16, 24, 24, 40, 40, 40, 48, 48, 96, 96, 96],
    stackwise_kernel_size=[3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 5],
    stackwise_stride=[2, 2, 1, 2, 1, 1, 1, 1, 2, 1, 1],
    stackwise_se_ratio=[0.25, None, None] + [0.25] * 8,
    stackwise_activation=["relu"] * 3 + ["hard_swish"] * 8,
    input_shape=(64, 64, 3),
)
_CV_RESNET = dict(
    stackwise_filters=[64, 64, 64],
    stackwise_blocks=[2, 2, 2],
    stackwise_strides=[1, 2, 2],
    block_type="basic_block",
    input_shape=(32, 32, 3),
)

MODELS = [
    ("keras.applications", "VGG16", _app(A.VGG16, 32)),
    ("keras.applications", "ResNet50", _app(A.ResNet50, 32)),
    ("keras.applications", "ResNet50V2", _app(A.ResNet50V2, 32)),
    ("keras.applications", "InceptionV3", _app(A.InceptionV3, 75)),
    ("keras.applications", "InceptionResNetV2", _app(A.InceptionResNetV2, 75)),
    ("keras.applications", "Xception", _app(A.Xception, 71)),
    ("keras.applications", "MobileNet", _app(A.MobileNet, 32, alpha=0.25)),
    ("keras.applications", "MobileNetV2", _app(A.MobileNetV2, 32, alpha=0.35)),
    ("keras.applications", "MobileNetV3Small", _app(A.MobileNetV3Small, 32)),
    ("keras.applications", "MobileNetV3Large", _app(A.MobileNetV3Large, 32)),
    ("keras.applications", "DenseNet121", _app(A.DenseNet121, 32)),
    ("keras.applications", "NASNetMobile", _app(A.NASNetMobile, 32)),
    ("keras.applications", "EfficientNetB0", _app(A.EfficientNetB0, 32)),
    ("keras.applications", "EfficientNetV2B0", _app(A.EfficientNetV2B0, 32)),
    ("keras.applications", "ConvNeXtTiny", _app(A.ConvNeXtTiny, 32)),
    ("keras-hub", "MobileNetBackbone (V3)", _hub_mobilenet),
    ("keras-hub", "CSPNetBackbone", _hub_cspnet),
    ("keras-hub", "ResNetBackbone", _hub_resnet),
    ("keras-hub", "VGGBackbone", _hub_vgg),
    ("keras-hub", "DenseNetBackbone", _hub_densenet),
    ("keras-hub", "EfficientNetBackbone", _hub_efficientnet),
    ("keras-hub", "HGNetV2Backbone", _hub_hgnetv2),
    (
        "keras-hub",
        "ResNetBackbone (v2, bottleneck)",
        _hub_resnet_variant(block_type="bottleneck_block", use_pre_activation=True),
    ),
    (
        "keras-hub",
        "ResNetBackbone (vd)",
        _hub_resnet_variant(block_type="bottleneck_block_vd", input_conv_filters=[16, 16, 32]),
    ),
    ("keras-hub", "DeepLabV3Backbone", _hub_deeplab),
    ("keras-hub", "MobileNetImageClassifier", _hub_classifier),
    ("keras-hub", "RetinaNetObjectDetector", _hub_retinanet),
    ("keras-cv", "MobileNetV3Backbone (Small)", _cv("MobileNetV3Backbone", **_CV_MOBILENET)),
    (
        "keras-cv",
        "YOLOV8Backbone",
        _cv(
            "YOLOV8Backbone",
            stackwise_channels=[16, 32, 64, 64],
            stackwise_depth=[1, 2, 2, 1],
            input_shape=(64, 64, 3),
        ),
    ),
    ("keras-cv", "YOLOV8Detector", _cv_yolov8_detector),
    ("keras-cv", "EfficientNetLiteBackbone", _cv("EfficientNetLiteBackbone", **_EFFNET)),
    (
        "keras-cv",
        "EfficientNetV1Backbone",
        _cv("EfficientNetV1Backbone", stackwise_squeeze_and_excite_ratios=_SE, **_EFFNET),
    ),
    (
        "keras-cv",
        "EfficientNetV2Backbone",
        _cv(
            "EfficientNetV2Backbone",
            stackwise_squeeze_and_excite_ratios=[0, 0, 0.25, 0.25],
            stackwise_conv_types=["fused", "fused", "unfused", "unfused"],
            **_EFFNET,
        ),
    ),
    ("keras-cv", "ResNetBackbone", _cv("ResNetBackbone", **_CV_RESNET)),
    ("keras-cv", "ResNetV2Backbone", _cv("ResNetV2Backbone", **_CV_RESNET)),
    (
        "keras-cv",
        "DenseNetBackbone",
        _cv(
            "DenseNetBackbone",
            stackwise_num_repeats=[2, 2, 2],
            growth_rate=8,
            input_shape=(32, 32, 3),
        ),
    ),
]


def _removal(groups, rng, fraction=0.25):
    removal = {}
    for g in groups:
        # grouped-conv divisions (ChannelGroup.blocks in older versions, none before that)
        divisions = getattr(g, "divisions", getattr(g, "blocks", 1))
        per = int(g.size // divisions * fraction)
        if g.prunable and per:
            step = g.size // divisions
            picks = [d * step + rng.choice(step, per, replace=False) for d in range(divisions)]
            removal[g.name] = sorted(np.concatenate(picks).tolist())
    return removal


def _internal(model) -> set[str]:
    """Names of the groups not tied to the model input or a model output.

    A group is tied to an output when its channels reach one through layers without weights
    (a softmax, the reshape and concatenation after a detector's predictors). Runs on the
    surgery of before this change too, to record its numbers.
    """
    from afp_tf.surgery import graph as graphs
    from afp_tf.surgery import groups as old  # before: analyze() lived there

    analysis = getattr(surgery, "analyze", None) or old.analyze
    analysis = analysis(model)
    graph = graphs.as_functional(model)
    reaching = {id(t) for t in graph.outputs}
    for node in reversed(list(graphs.nodes_in_order(graph))):
        op = node.operation
        produces = bool(getattr(op, "weights", None)) or graphs.is_submodel(op)
        if not produces and any(id(t) in reaching for t in node.outputs):
            reaching.update(id(t) for t in node.input_tensors)
    tensors = [*graph.inputs, *graph.outputs] + [
        t for node in graphs.nodes_in_order(graph) for t in node.outputs if id(t) in reaching
    ]
    io = [analysis.labels.get(id(t)) for t in tensors]
    tied = set(analysis.roots[np.concatenate([x for x in io if x is not None])].tolist())
    return {name for name, order in analysis.orders.items() if not tied & set(order.tolist())}


def measure(source: str, family: str, build) -> dict:
    keras.utils.clear_session()
    start = time.perf_counter()
    row = {"source": source, "family": family}
    try:
        model = golden.randomize(build())
        groups = surgery.find_channel_groups(model)
        internal = _internal(model)
        inner = [g for g in groups if g.name in internal]
        removal = _removal(groups, np.random.default_rng(0))
        shape = tuple(model.inputs[0].shape[1:])
        x = np.random.default_rng(1).uniform(-1, 1, (2, *shape)).astype("float32")
        pruned = surgery.remove_filters(model, removal)
        row.update(
            params=int(model.count_params()),
            params_pruned=int(pruned.count_params()),
            groups=len(groups),
            prunable=sum(g.prunable for g in groups),
            internal=len(inner),
            internal_prunable=sum(g.prunable for g in inner),
            golden_rel_error=golden.golden_error(model, removal, x, pruned),
            boundaries=[g.reason for g in inner if not g.prunable],
        )
        row["internal_share"] = row["internal_prunable"] / max(row["internal"], 1)
    except Exception as err:  # noqa: BLE001 - one family failing is a table row, not a crash
        row["error"] = f"{type(err).__name__}: {err}"[:500]
        traceback.print_exc()
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def _markdown(rows: list[dict]) -> str:
    lines = [
        "# Surgery coverage",
        "",
        "Generated by `benchmarks/surgery_coverage.py` (do not edit by hand). Small randomly "
        "initialised models; *internal* groups are those not tied to the model input or a model "
        "output. Golden error: 25% of every prunable group removed, largest relative error of "
        "the pruned model against the original with its consumers' inputs zeroed "
        "(exact: < 1e-4).",
        "",
        "| source | family | groups | prunable | internal prunable | share | golden rel. error |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['source']} | {r['family']} | failed: {r['error'][:120]} |||||")
            continue
        lines.append(
            f"| {r['source']} | {r['family']} | {r['groups']} | {r['prunable']} | "
            f"{r['internal_prunable']}/{r['internal']} | {100 * r['internal_share']:.0f}% | "
            f"{r['golden_rel_error']:.1e} |"
        )
    lines += [
        "",
        "## Remaining boundaries of internal groups",
        "",
        "One line per kind of reason (names elided), with how many groups it blocks and one "
        "example.",
        "",
    ]
    for r in rows:
        kinds: dict[str, list[str]] = {}
        for reason in r.get("boundaries", []):
            kinds.setdefault(re.sub(r"'[^']*'", "'…'", reason), []).append(reason)
        for examples in kinds.values():
            lines.append(f"- {r['source']} {r['family']} ({len(examples)}): {examples[0]}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="family names to run (default: all)")
    parser.add_argument("--name", default="surgery_coverage", help="result file name")
    parser.add_argument(
        "--update", action="store_true", help="with --only: replace those rows of the last run"
    )
    parser.add_argument("--docs", default="docs/surgery_coverage.md", help="markdown output")
    args = parser.parse_args()
    rows = []
    for source, family, build in MODELS:
        if args.only and family not in args.only:
            continue
        rows.append(measure(source, family, build))
        r = rows[-1]
        print(family, {k: r.get(k) for k in ("groups", "prunable", "internal_share", "error")})
    if args.update:  # the other families' rows from the last full run
        previous = io_utils.read_json(RESULTS / f"{args.name}.json")["families"]
        fresh = {(r["source"], r["family"]): r for r in rows}
        rows = [fresh.pop((r["source"], r["family"]), r) for r in previous]
        order = [(source, family) for source, family, _ in MODELS]
        for key, row in fresh.items():  # families new since the last full run, in MODELS order
            later = [
                i
                for i, r in enumerate(rows)
                if order.index((r["source"], r["family"])) > order.index(key)
            ]
            rows.insert(later[0] if later else len(rows), row)
    path = write_result(args.name, {"families": rows})
    if args.docs:
        docs = Path(__file__).resolve().parents[1] / args.docs
        docs.parent.mkdir(parents=True, exist_ok=True)
        io_utils.write_text(docs, _markdown(rows))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
