"""The ONNX Runtime engine: decode -> preprocess -> session, per batch; no torch."""
