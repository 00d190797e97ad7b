"""ONNX export of a checkpointed model for serving (docs/export.md).

:mod:`.source` reads a checkpoint into plain arrays (torch only), :mod:`.graph` builds the
ONNX graph with ``onnx.helper``, :mod:`.layout` writes the plain or Triton layout and
:mod:`.periodic` is the daemon's optional periodic export.  Only :mod:`.graph` and
:mod:`.layout` import ``onnx`` (the ``[export]`` extra); importing this package does not.
"""
