"""edgefer.export: turns checkpoints and ONNX files into artifacts for each target and precision."""
