"""The ONNX graph: standardise → (Gemm, Relu)* → Gemm (head) → Softmax, ArgMax.

Built with ``onnx.helper`` (no tracing): the same arrays give the same bytes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import __version__
from .source import ModelArrays

OPSET = 17
INPUT = "features"
PROBABILITIES = "probabilities"
LABEL_INDEX = "label_index"


def build_model(arrays: ModelArrays) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(arrays.mean, "scaler_mean"),
             numpy_helper.from_array(arrays.std, "scaler_std")]
    nodes = [helper.make_node("Sub", [INPUT, "scaler_mean"], ["centred"]),
             helper.make_node("Div", ["centred", "scaler_std"], ["h0"])]
    last = len(arrays.layers) - 1
    for i, (w, b) in enumerate(arrays.layers):
        inits += [numpy_helper.from_array(np.ascontiguousarray(w), f"w{i}"),
                  numpy_helper.from_array(b, f"b{i}")]
        out = "logits" if i == last else f"z{i}"
        # transB: torch keeps Linear weights as [out, in].
        nodes.append(helper.make_node("Gemm", [f"h{i}", f"w{i}", f"b{i}"], [out], transB=1))
        if i != last:
            nodes.append(helper.make_node("Relu", [out], [f"h{i + 1}"]))
    nodes += [helper.make_node("Softmax", ["logits"], [PROBABILITIES], axis=1),
              # ArgMax keeps the first maximum, as torch's max does.
              helper.make_node("ArgMax", [PROBABILITIES], [LABEL_INDEX], axis=1, keepdims=0)]
    graph = helper.make_graph(
        nodes, "stream_learner",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", arrays.n_features])],
        [helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["N", arrays.n_classes]),
         helper.make_tensor_value_info(LABEL_INDEX, TensorProto.INT64, ["N"])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="stream-learner", producer_version=__version__)
    model.ir_version = 8        # opset 17's IR; older onnxruntime builds refuse newer
    helper.set_model_props(model, arrays.metadata())
    onnx.checker.check_model(model)
    return model


def serialize(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)
