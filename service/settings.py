"""One typed settings object, read from the environment (prefix ST_) once at start-up."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "minilm-en"


class Settings(BaseSettings):
    """Everything the service can be told; validated when it is built."""

    model_config = SettingsConfigDict(env_prefix="ST_", env_file=None, extra="ignore")

    model_dir: Path = Field(DEFAULT_MODEL_DIR, description="Folder of the model to serve.")
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on.")
    threads: int = Field(0, ge=0, description="onnxruntime intra-op threads; 0 = all cores.")
    batch_size: int = Field(32, ge=1, le=1024, description="Messages per model run.")
    max_messages: int = Field(200, ge=1, description="Messages per transcript.")
    max_message_chars: int = Field(20_000, ge=1, description="Characters per message.")
    log_level: str = Field("info", description="Log level of the service.")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
