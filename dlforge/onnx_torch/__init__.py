"""An ONNX graph as a differentiable ``torch.nn.Module``: white-box attacks on the deployed graph itself.

The audit's gradient attacks (FGSM, PGD) normally run on the PyTorch source model. What ships is
something else: an ONNX Runtime-optimized fp32 engine with fused com.microsoft ops, an INT8 QDQ
engine, or a third-party ``.onnx``. :func:`torch_module_from_onnx` maps such a graph, op by op, onto
torch so the attack's gradients are those of the deployed graph, and :func:`match_engine` proves the
mapping against the engine before anyone trusts an attack run on it.

Why our own mapping: onnx2torch imports torchvision, which has no CPU build here; and it maps neither
ONNX Runtime's fused ops nor QDQ / QOperator INT8 graphs with straight-through gradients.

How the module runs:

- Every value that does not depend on the input (initializers, ``Constant``, shape arithmetic on
  constants, the dequantized INT8 weights) is computed once at construction and kept as a buffer,
  never a trainable parameter. What is left is a list of ``(bound torch callable, input slots,
  output slots)`` run in order; attributes are parsed once, not per call. Steps that do not lead to
  the first output are dropped. Two patterns ONNX Runtime leaves unfused on 3-D inputs run as one
  torch call (``MatMul`` + bias ``Add`` as ``F.linear``, GELU written with ``Erf`` as ``F.gelu``),
  and conv graphs keep their weights channels-last, as the PyTorch model under attack does
  (:mod:`dlforge.adversarial.attacks.torch_model`): PGD on a converted LeNet runs as fast as on its source.
- ``QuantizeLinear``/``DequantizeLinear`` compute exactly what ONNX defines (``x / scale``, round
  half to even, add the zero point, saturate; per tensor or per ``axis``). Quantized values travel
  as float tensors holding the integer levels. The backward pass is straight-through (BPDA:
  Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018,
  https://arxiv.org/abs/1802.00420) for the rounding, and exact for the saturation: a
  ``QuantizeLinear -> DequantizeLinear`` pair passes the gradient where the value lies inside the
  representable range and stops it where the forward clipped (as PyTorch's fake-quantize backward
  does), a lone ``QuantizeLinear`` scales it by ``1 / scale`` as well. Rounding has a zero gradient
  almost everywhere, so without the straight-through part no gradient attack could move an INT8
  engine; without the clip mask the gradient would be that of the network without its ReLUs, which
  ONNX Runtime's quantizer folds into the quantization range (on a CIFAR ResNet-20 that gradient has
  cosine ~0 with the fp32 graph's).
- A graph exported with a static batch (``[1, 1, 28, 28]``, ``Reshape`` to ``[1, 256]``) still
  takes any batch: a ``Reshape`` whose target starts with the static batch and whose input's leading
  dimension carried it takes the batch from its input. A batched run is compared with per-sample
  runs at construction; where they differ (a batch baked in elsewhere), the module runs the graph
  per group of ``static_batch`` samples under ``torch.func.vmap`` instead.

The package, by concern: :mod:`.nodes` (a parsed node, the op registry ``_BUILDERS``), the op
builders (:mod:`.elementwise`, :mod:`.shapes`, :mod:`.normalization`, :mod:`.linalg`,
:mod:`.quantization`, and :mod:`.qoperator`, the QOperator form of INT8 graphs: ``QLinearConv``,
``QLinearMatMul``, com.microsoft ``QLinearAdd`` ..., with the same straight-through rule), :mod:`.graph`
(the graph as a program), :mod:`.module` (the ``nn.Module``) and :mod:`.verify` (the proof against the
engine).

Left out (:class:`UnsupportedGraph` names every one in a single message): control flow (``If``,
``Loop``, ``Scan``), ``Resize``, ``GRU``/``RNN``, LSTM
peepholes / clip / sequence_lens / layout 1, ``FusedMatMul`` with ``transBatch*``, MaxPool's
``Indices``, float8 and blocked quantization, and any op not registered in ``_BUILDERS``.
"""

from __future__ import annotations

# the op builders register themselves in nodes._BUILDERS when imported
from dlforge.onnx_torch import elementwise, linalg, normalization, qoperator, quantization, shapes  # noqa: F401
from dlforge.onnx_torch.module import OnnxTorchModule, torch_module_from_onnx
from dlforge.onnx_torch.nodes import UnsupportedGraph
from dlforge.onnx_torch.quantization import straight_through
from dlforge.onnx_torch.verify import check_matches_engine, match_engine

__all__ = ["OnnxTorchModule", "UnsupportedGraph", "check_matches_engine", "match_engine", "straight_through",
           "torch_module_from_onnx"]
