"""The torch side: build backbones in torch, export them to ONNX, quantize, fine-tune."""
