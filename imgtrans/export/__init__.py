"""The `export` command: a trained generator to ONNX, checked against PyTorch, described by its sidecar."""
