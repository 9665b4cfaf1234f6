"""One typed settings object, read from the environment (prefix ST_) once at start-up."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.gate import DEFAULT_BLOCKED_REGIONS, region_code

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "e5-multi"


MIN_KEY_CHARS = 16


class SettingsError(ValueError):
    """The settings cannot run a service."""


class Settings(BaseSettings):
    """Everything the service can be told; validated when it is built."""

    model_config = SettingsConfigDict(env_prefix="ST_", env_file=None, extra="ignore")

    model_dir: Path = Field(DEFAULT_MODEL_DIR, description="Folder of the model to serve.")
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on.")
    model_runs: int = Field(
        0,
        ge=0,
        le=64,
        description=(
            "Model calls run at once, each on its own thread; 0 = one per CPU core and one more "
            "(a core does not wait while the event loop hands a call's answers back)."
        ),
    )
    threads: int = Field(
        0,
        ge=0,
        description="onnxruntime intra-op threads per model call; 0 = the cores shared out "
        "among the model calls run at once (one each when there is one call per core).",
    )
    lone_threads: int = Field(
        0,
        ge=0,
        description="onnxruntime intra-op threads of a model call that runs alone (no other "
        "call in flight, nothing queued: a lone request at low load); 0 = every core. When it "
        "is no more than `threads`, lone calls run like the others (no second session).",
    )
    batch_size: int = Field(32, ge=1, le=1024, description="Windows per model call.")
    batch_cells: int = Field(
        512, ge=1, description="Padded tokens (rows x width) per model call; longer calls split."
    )
    log_level: str = Field("info", description="Log level of the service.")
    direct_routes: bool = Field(
        True,
        description="Answer POST /v1/classify and /v1/screen with a JSON body straight from "
        "ASGI (the same handlers, validation and errors as the FastAPI routes, without FastAPI's "
        "per-request machinery: about 0.2 ms less per request); false: through FastAPI.",
    )
    workers: int = Field(1, ge=1, le=64, description="Server processes, each with one model.")
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto",
        description="The server's event loop: uvloop (libuv; less of the loop's CPU per request, "
        "bench/event_loop.py), asyncio's own, or auto: uvloop where it is installed (it is a "
        "dependency on Linux and macOS), asyncio's elsewhere.",
    )
    # -- auth -------------------------------------------------------------------------------
    auth_required: bool = Field(True, description="Require a bearer API key on /v1 routes.")
    api_keys: str = Field("", description="Comma-separated API keys.", repr=False)
    api_keys_file: Path | None = Field(None, description="File with one API key per line.")
    # -- bounds -----------------------------------------------------------------------------
    max_body_bytes: int = Field(2_000_000, ge=1_000, description="Request body size.")
    max_transcripts: int = Field(64, ge=1, description="Transcripts per batch request.")
    max_messages: int = Field(200, ge=1, description="Messages per transcript.")
    max_message_chars: int = Field(20_000, ge=1, description="Characters per message.")
    max_signals: int = Field(100, ge=1, description="Signals per screen request.")
    max_request_windows: int = Field(
        512,
        ge=1,
        description="Token windows (of up to 64 tokens) one request may need, over all its "
        "messages and transcripts; more is refused with 413 before any model work. A lower "
        "queue_max_windows lowers it too (a request must fit the queue).",
    )
    header_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Seconds a request's headers may take (else 408, closed)."
    )
    shutdown_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds a SIGTERM waits for requests in flight to finish before the ones "
        "left are cut off (500); set it under the orchestrator's grace period.",
    )
    body_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Seconds a request body may take to arrive (else 408)."
    )
    metrics_public: bool = Field(
        False, description="Serve /metrics without an API key (when keys are on)."
    )
    # -- the gate ---------------------------------------------------------------------------
    blocked_regions: str = Field(
        DEFAULT_BLOCKED_REGIONS, description="Comma-separated ISO 3166-1 alpha-2 codes."
    )
    region_required: bool = Field(
        True,
        description="A screen request without `region` has every signal blocked (reason "
        "jurisdiction): a guard that cannot tell where the user is must not assume.",
    )
    unsupported_language: Literal["block", "score"] = Field(
        "block",
        description="A signal whose transcript or source message is in a language the model "
        "does not support: block it (reason unsupported_language) or score it anyway.",
    )
    tracing: Literal["off", "console", "otlp"] = Field(
        "off",
        description="OpenTelemetry spans per request, queue wait and model run: off, console, "
        "or otlp (to the collector of the OTEL_EXPORTER_OTLP_* variables).",
    )
    # -- throughput -------------------------------------------------------------------------
    cache_entries: int = Field(
        100_000, ge=0, description="Per-message score cache and language cache (LRU, each)."
    )
    batch_max_windows: int = Field(64, ge=1, description="Windows per shared model run.")
    batch_max_tokens: int = Field(8192, ge=64, description="Tokens per shared model run.")
    batch_wait_ms: float = Field(2.0, ge=0, le=1000, description="Wait for more work (ms).")
    queue_max_windows: int = Field(1024, ge=1, description="Queued windows before 503.")
    max_inflight: int = Field(64, ge=1, description="Scoring requests in progress before 503.")

    @model_validator(mode="after")
    def _keys_when_required(self) -> Settings:
        self.regions()  # a blocked region that is not an ISO code stops the start-up
        if self.auth_required and not self.keys():
            raise SettingsError(
                "API keys are required: set ST_API_KEYS or ST_API_KEYS_FILE, "
                "or ST_AUTH_REQUIRED=false for local use"
            )
        return self

    def keys(self) -> list[str]:
        """The accepted API keys, from the variable and the file (one per line; blank lines
        and `#` comments are ignored, a byte-order mark is stripped). A key shorter than
        MIN_KEY_CHARS is refused: it could be guessed."""
        keys = [k.strip() for k in self.api_keys.split(",") if k.strip()]
        if self.api_keys_file is not None:
            try:
                text = self.api_keys_file.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or "not UTF-8 text"
                raise SettingsError(f"cannot read ST_API_KEYS_FILE: {reason}") from exc
            lines = [line.strip() for line in text.splitlines()]
            keys += [k for k in lines if k and not k.startswith("#")]
        short = sum(len(k) < MIN_KEY_CHARS for k in keys)
        if short:
            raise SettingsError(
                f"{short} API key(s) shorter than {MIN_KEY_CHARS} characters: use long random "
                "keys (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        return keys

    def model_parallelism(self) -> tuple[int, int]:
        """(model calls run at once, intra-op threads of each): on these small encoders one
        single-threaded call per core does more than one call spread over every core
        (`bench/engine.py --parallel` prints both); by default one call more than the cores,
        so that a core has the next call to run while the event loop hands the last one's
        answers back and the next batch is collected (at concurrency 32 on 2 cores, 3 calls
        kept the cores 1.87-1.90 busy against 1.82 for 2, and did 7% more messages)."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        cores = cores or os.cpu_count() or 1
        runs = self.model_runs or cores + 1
        return runs, self.threads or max(1, cores // runs)

    def lone_call_threads(self) -> int:
        """Intra-op threads of a model call with the cores to itself: at concurrency 1 a call
        over every core answers sooner than one single-threaded call (`bench/engine.py
        --parallel`); 0 when it would be no wider than the others (no second session)."""
        _runs, threads = self.model_parallelism()
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        lone = self.lone_threads or cores or os.cpu_count() or 1
        return lone if lone > threads else 0

    def regions(self) -> frozenset[str]:
        """The blocked regions as ISO codes; SettingsError names a code that is not one."""
        out = set()
        for r in self.blocked_regions.split(","):
            if r.strip():
                try:
                    out.add(region_code(r))
                except ValueError:
                    raise SettingsError(
                        f"ST_BLOCKED_REGIONS: {r.strip()!r} is not an ISO 3166-1 alpha-2 code"
                    ) from None
        return frozenset(out)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
