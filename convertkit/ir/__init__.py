"""The ONNX hub: every target starts from one validated, shape-inferred ONNX model."""
