"""The runtime: scores transcripts with an exported ONNX model. No torch, no transformers."""

import os

# onnxruntime's telemetry writes a device id and an event database under $HOME/.cache when it
# is first imported; the variable must be set before that import to switch it off (the API
# call `disable_telemetry_events` comes too late for those files).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
