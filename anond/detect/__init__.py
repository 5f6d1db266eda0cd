"""Detection: ONNX Runtime sessions, one decoder per model family, and the Engine."""
