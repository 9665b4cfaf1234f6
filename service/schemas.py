"""Request and response bodies of the REST API, with explicit limits."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["user", "assistant", "system"]

EXAMPLE_TRANSCRIPT: dict[str, Any] = {
    "messages": [
        {"role": "user", "content": "I was diagnosed with type 2 diabetes last month"},
        {"role": "assistant", "content": "I'm sorry to hear that. How can I help?"},
        {"role": "user", "content": "Recommend hiking boots for rocky trails"},
    ]
}


class Message(BaseModel):
    """One turn of a chat transcript."""

    model_config = ConfigDict(extra="forbid")

    role: Role = Field(description="Who wrote the message.")
    content: str = Field(description="The message text.")


class ClassifyRequest(BaseModel):
    """A transcript to classify: its messages in order."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [EXAMPLE_TRANSCRIPT]},
    )

    messages: list[Message] = Field(min_length=1, description="The transcript, oldest first.")


class ModelRef(BaseModel):
    """Which model answered."""

    name: str
    version: str


class LabelDecision(BaseModel):
    """Scores in [0, 1] per label, and whether each reaches its threshold."""

    scores: dict[str, float]
    flags: dict[str, bool]
    sensitive: bool = Field(description="True when any label is flagged.")


class MessageResult(LabelDecision):
    """The decision for one message."""

    index: int = Field(description="Position of the message in the transcript.")
    role: Role
    windows: int = Field(description="How many token windows of the message were scored.")


class ClassifyResponse(BaseModel):
    """The decision for the transcript as a whole and for each of its messages."""

    model: ModelRef
    transcript: LabelDecision
    messages: list[MessageResult]


class ModelInfo(BaseModel):
    """What the served model is and how it decides."""

    name: str
    version: str
    base_model: str
    labels: list[str]
    thresholds: dict[str, float]
    languages: list[str]
    max_length: int


class ErrorResponse(BaseModel):
    """Every error: a stable code and a readable message (never transcript text)."""

    code: str
    message: str
    errors: list[dict[str, str]] = Field(default_factory=list)
