"""The runtime: scores transcripts with an exported ONNX model. No torch, no transformers."""
