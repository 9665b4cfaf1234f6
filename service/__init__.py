"""The runtime: scores transcripts with an exported ONNX model. No torch, no transformers."""

import os
from importlib.metadata import PackageNotFoundError, version

try:  # one version, from the package metadata (pyproject.toml)
    __version__ = version("sensitive-topics")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

# onnxruntime's telemetry writes a device id and an event database under $HOME/.cache when it
# is first imported; the variable must be set before that import to switch it off (the API
# call `disable_telemetry_events` comes too late for those files).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
