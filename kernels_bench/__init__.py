"""Turning one key into numbers: block modules, ONNX export, backends, the timing protocol."""
