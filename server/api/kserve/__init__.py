"""The KServe Open Inference Protocol v2 (REST) at /v2, for onnx models."""
