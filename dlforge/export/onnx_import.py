"""``dlforge import model.onnx``: a third-party ONNX model as an onnx artifact every later stage takes.

A published ``.onnx`` says nothing of what it expects beyond tensor shapes: not its classes, not the
value range, not the normalization or the resizing its authors applied. The import records all of it
on the card and puts the one part that is arithmetic into the graph:

- **normalization** (``--normalize MEAN/STD``): ``Sub`` and ``Div`` nodes in front of the original
  input, which keeps its name. The artifact's graph then takes pixels in ``--value-range`` like a
  dlforge export does, so an attack's eps is in pixel units everywhere (bench, build, audit, drift,
  deploy) and nothing else ever normalizes;
- **labels** (``--labels``, ``--labels-file`` with a ``synset.txt`` or one name per line, or
  ``--num-classes``), checked against the output's width;
- **photograph preprocessing** (``--resize``, ``--crop``, ``--interpolation``, ``--channel-order``):
  the card's ``model.image_preprocessing``, applied whenever a stage reads raw images for this model.

The new graph is verified against the original fed inputs normalized in numpy, on the evaluation
images given with ``--data`` (else on uniform noise in the value range): the same max-abs-diff /
top-1 rule as an export, top-1 alone for a quantized graph (QDQ or QOperator), whose rounding can
move a logit by a quantization step. With ``--data`` the card also records the top-1 accuracy.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

from dlforge.artifact import Artifact, ArtifactWriter, Card, ModelInfo, TensorSpec, sha256_file
from dlforge.backends.ort.arithmetic import int8_arithmetic
from dlforge.env import environment
from dlforge.errors import InputError, StageFailed, require
from dlforge.onnx_info import QUANTIZED_OPS
from dlforge.train.import_options import ImportOptions

PAYLOAD = "model.onnx"
NOISE_SAMPLES = 16
QUANTIZED_TOP1 = 0.995


def onnx_from_file(source: str | os.PathLike, out_dir: str | os.PathLike, options: ImportOptions | None = None, *,
                   force: bool = False, **settings) -> Artifact:
    """Import the ONNX file ``source`` as an onnx artifact in ``out_dir`` (see the module docstring).

    Raises:
        InputError: the file is not a readable single-input ONNX classifier, or an option does not fit it
            (labels against the output width, normalization against the channels, crop against the input).
        StageFailed: the rewritten graph does not compute what the original does (nothing is written).
    """
    onnx = require("onnx", "toolkit", "importing an ONNX model")
    options = ImportOptions.build(options, **settings)
    source = Path(source)
    if options.weights is not None or options.kwargs:
        raise InputError(f"--weights and --kwargs are for a zoo or package.module:factory model; {source} holds its "
                         "own weights")
    if options.task != "classification":
        raise InputError("importing an .onnx file supports classifiers (--task classification)")
    proto = _load(onnx, source)
    shape, out_width, in_name = _io(proto, source, options)
    labels = _labels(options, out_width, source)
    from dlforge.train.normalization import normalization_section
    from dlforge.train.options import parse_normalize

    parsed = parse_normalize(options.normalize)
    normalization = normalization_section(*parsed, shape[0]) if parsed else None
    preprocess = options.image_preprocessing(shape)
    name = options.name or source.stem
    labels_file = options.labels_file
    options = ImportOptions.build(options, name=name, input_shape=shape, labels=labels, labels_file=None,
                                  num_classes=None)
    with ArtifactWriter(out_dir, force=force, protect=[source]) as writer:
        dataset = None
        if options.data:
            from dlforge.data import load_dataset

            dataset = load_dataset(options.data, options.data_dir, labels=labels, input_shape=shape,
                                   preprocess=preprocess or None)
            if tuple(dataset.input_shape) != shape:
                raise InputError(f"--data {options.data} has images {tuple(dataset.input_shape)}, the model takes "
                                 f"{shape}; give --resize / --crop, or the model's own data")
            if len(dataset.labels) != len(labels):
                raise InputError(f"--data {options.data} has {len(dataset.labels)} classes, the model outputs "
                                 f"{len(labels)}; give an evaluation set labelled in the model's classes")
        graph = _with_normalization(onnx, proto, in_name, normalization)
        info = ModelInfo(
            name=name, task="classification",
            inputs=(TensorSpec(in_name, (_batch(proto), *shape), "float32"),),
            outputs=(TensorSpec(proto.graph.output[0].name, (_batch(proto), len(labels)), "float32"),),
            value_range=tuple(float(v) for v in options.value_range), labels=labels,
            dataset=dataset.name if dataset is not None else None,
            preprocessing=_preprocessing_text(options, normalization, preprocess), image_preprocessing=preprocess)
        from dlforge.export.onnx_export import set_metadata

        set_metadata(graph, info)
        path = writer.file(PAYLOAD)
        onnx.save(graph, str(path))
        quantized = bool(QUANTIZED_OPS & {n.op_type for n in proto.graph.node})
        x = dataset.x_test if dataset is not None else _noise(shape, options.value_range)
        verification, logits = _verify(source, path, x, normalization, options.atol, quantized)
        verification["inputs"] = "evaluation images" if dataset is not None else "uniform noise in the value range"
        if logits.ndim != 2 or logits.shape[1] != len(labels):
            raise InputError(f"{source} outputs {list(logits.shape[1:])} scores per input, but the labels name "
                             f"{len(labels)} classes; give the class list of this model")
        sections = {"verification": verification, "source_file": {"path": str(source.resolve()),
                                                                   "sha256": sha256_file(source)},
                    "graph": {"opset": _opset(proto), "nodes": len(graph.graph.node), "quantized": quantized,
                              "ops": dict(collections.Counter(n.op_type for n in graph.graph.node))}}
        arithmetic = int8_arithmetic(path) if quantized else None
        if arithmetic is not None:  # the accuracy measured here is this CPU's
            sections["graph"]["int8_arithmetic"] = arithmetic
        if normalization:
            sections["normalization"] = normalization
        if dataset is not None:
            sections["dataset"] = dataset.describe()
            sections["metrics"] = {"test_accuracy": round(float((logits.argmax(1) == dataset.y_test).mean()), 6),
                                   "test_samples": len(x)}
        params = {"model": str(source), **options.params(), "labels_file": labels_file}
        card = Card(kind="onnx", payload=PAYLOAD, model=info, parent=None, params=params, env=environment(),
                    sections=sections)
        return writer.commit(card)


def _load(onnx, source: Path):
    if not source.is_file():
        raise InputError(f"{source} does not exist or is not a file; give the .onnx model to import")
    if source.stat().st_size == 0:
        raise InputError(f"{source} is empty; give the .onnx model to import")
    try:
        proto = onnx.load(str(source))
        onnx.checker.check_model(proto)
    except Exception as exc:  # protobuf and the checker raise several types: each is an unreadable model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{source} is not a valid ONNX model ({first[:200]}); give a model onnx.checker "
                         "accepts") from None
    return proto


def _inputs(proto) -> list:
    initializers = {i.name for i in proto.graph.initializer}
    return [v for v in proto.graph.input if v.name not in initializers]


def _dims(value) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value.type.tensor_type.shape.dim]


def _batch(proto):
    first = _dims(_inputs(proto)[0])[0]
    return first if isinstance(first, int) and first > 0 else "batch"


def _io(proto, source: Path, options: ImportOptions) -> tuple[tuple[int, ...], int | None, str]:
    """``(input shape without the batch, output width or None, input name)``, checked against the options."""
    inputs = _inputs(proto)
    if len(inputs) != 1 or len(proto.graph.output) < 1:
        raise InputError(f"{source} has {len(inputs)} inputs; dlforge imports single-input classifiers (one image "
                         "batch in, logits out)")
    dims = _dims(inputs[0])
    if inputs[0].type.tensor_type.elem_type != 1:
        raise InputError(f"{source}: input {inputs[0].name!r} is not float32; dlforge feeds float32 images")
    shape = tuple(options.input_shape) or tuple(dims[1:])
    if len(shape) != len(dims) - 1 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise InputError(f"{source}: input {inputs[0].name!r} has shape {dims}; give --input-shape C,H,W for the "
                         "dimensions after the batch")
    fixed = [d for d in dims[1:]]
    if any(isinstance(f, int) and f > 0 and f != s for f, s in zip(fixed, shape)):
        raise InputError(f"--input-shape {','.join(map(str, shape))} contradicts the graph's input {dims}")
    out = _dims(proto.graph.output[0])
    width = out[-1] if len(out) == 2 and isinstance(out[-1], int) and out[-1] > 0 else None
    return shape, width, inputs[0].name


def _labels(options: ImportOptions, width: int | None, source: Path) -> tuple[str, ...]:
    labels = options.given_labels() or tuple(str(i) for i in range(width or 0))
    if len(labels) < 2:
        raise InputError(f"{source}: give the classes (--labels, --labels-file or --num-classes); the graph's output "
                         "width does not say")
    if width is not None and len(labels) != width:
        raise InputError(f"the labels name {len(labels)} classes, but {source} outputs {width} scores; give the "
                         "class list of this model")
    return labels


def _opset(proto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def _with_normalization(onnx, proto, in_name: str, normalization: dict | None):
    """A copy of ``proto`` whose input ``in_name`` takes pixels: ``(x - mean) / std`` in front of the graph."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = onnx.ModelProto()
    graph.CopyFrom(proto)
    if not normalization:
        return graph
    if _opset(proto) < 7:
        raise InputError(f"the graph's opset is {_opset(proto)}; the Sub/Div that --normalize puts in front need "
                         "broadcasting (opset 7 or later): convert it first with onnx.version_converter, or import it "
                         "without --normalize")
    inner = f"{in_name}_dlforge_normalized"
    for node in graph.graph.node:
        node.input[:] = [inner if i == in_name else i for i in node.input]
    shape = (1, -1, 1, 1)
    mean = numpy_helper.from_array(np.array(normalization["mean"], np.float32).reshape(shape), f"{in_name}_mean")
    std = numpy_helper.from_array(np.array(normalization["std"], np.float32).reshape(shape), f"{in_name}_std")
    centered = f"{in_name}_dlforge_centered"
    nodes = [helper.make_node("Sub", [in_name, mean.name], [centered], name="dlforge_normalize_sub"),
             helper.make_node("Div", [centered, std.name], [inner], name="dlforge_normalize_div")]
    graph.graph.initializer.extend([mean, std])
    old = list(graph.graph.node)
    del graph.graph.node[:]
    graph.graph.node.extend(nodes + old)
    return graph


def _noise(shape: tuple, value_range):
    import numpy as np

    lo, hi = value_range
    return np.random.default_rng(0).uniform(lo, hi, (NOISE_SAMPLES, *shape)).astype(np.float32)


def _verify(source: Path, path: Path, x, normalization: dict | None, atol: float, quantized: bool):
    """The imported graph on pixels against the original on normalized pixels: ``(verification, its logits)``."""
    import numpy as np

    from dlforge.backends.ort.session import inference_session

    def run(model: Path, inputs: np.ndarray) -> np.ndarray:
        try:
            session, _ = inference_session(str(model))  # an INT8 graph computes its own arithmetic on any CPU
            name = session.get_inputs()[0].name
            batch = session.get_inputs()[0].shape[0]
            step = batch if isinstance(batch, int) and batch > 0 else 32
            return np.concatenate([session.run(None, {name: inputs[i:i + step]})[0]
                                   for i in range(0, len(inputs), step)])
        except Exception as exc:  # onnxruntime raises its own types: the model does not run here
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{source} does not run in ONNX Runtime ({first[:200]})") from None

    if normalization:
        mean = np.array(normalization["mean"], np.float32).reshape(1, -1, 1, 1)
        std = np.array(normalization["std"], np.float32).reshape(1, -1, 1, 1)
        fed = ((x - mean) / std).astype(np.float32)
    else:
        fed = x
    expected, got = run(source, fed), run(path, x)
    finite = bool(np.isfinite(got).all() and np.isfinite(expected).all())
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    agreement = float((got.argmax(1) == expected.argmax(1)).mean())
    result = {"max_abs_diff": float(diff.max()) if finite else None, "samples": int(len(x)), "atol": atol,
              "top1_agreement": agreement, "criterion": f"top1_agreement>={QUANTIZED_TOP1}" if quantized else f"max_abs_diff<={atol:g}"}
    result["passed"] = bool(finite and (agreement >= QUANTIZED_TOP1 if quantized else diff.max() <= atol))
    if not result["passed"]:
        raise StageFailed(f"the imported graph does not compute what {source} does: max abs diff "
                          f"{result['max_abs_diff']}, top-1 agreement {agreement:.4f} on {len(x)} inputs (needs "
                          f"{result['criterion']})")
    return result, got


def _preprocessing_text(options: ImportOptions, normalization: dict | None, preprocess: dict) -> str:
    low, high = options.value_range
    steps = []
    if preprocess.get("resize"):
        steps.append(f"resize the shorter side to {preprocess['resize']} ({preprocess['interpolation']})")
    if preprocess.get("crop"):
        steps.append(f"center-crop {preprocess['crop'][0]}x{preprocess['crop'][1]}")
    steps.append(f"{preprocess.get('channel_order', 'RGB')} pixels in [{low:g}, {high:g}]")
    text = ", ".join(steps)
    if normalization:
        text += (f"; the graph normalizes them itself, (x - mean) / std per channel with mean {normalization['mean']} "
                 f"and std {normalization['std']} (added in front of the imported graph)")
    return text
