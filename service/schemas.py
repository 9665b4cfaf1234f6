"""Request and response bodies of the REST API, with explicit limits."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from service.gate import region_code

Role = Literal["user", "assistant", "system", "developer", "tool"]


def _unicode(value: str) -> str:
    """Text must be valid Unicode: JSON can carry a lone surrogate ("\\ud800"), which no
    tokenizer can read (a 500 before this check)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text (a lone surrogate)") from None
    return value


Text = Annotated[str, AfterValidator(_unicode)]

EXAMPLE_MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": "I was diagnosed with type 2 diabetes last month"},
    {"role": "assistant", "content": "I'm sorry to hear that. How can I help?"},
    {"role": "user", "content": "Recommend hiking boots for rocky trails"},
]
EXAMPLE_CLASSIFY: Any = [
    {"messages": EXAMPLE_MESSAGES},
    {"transcripts": [{"id": "t1", "messages": EXAMPLE_MESSAGES[:1]}]},
]
EXAMPLE_SCREEN: dict[str, Any] = {
    "messages": EXAMPLE_MESSAGES,
    "signals": [
        {"id": "s1", "text": "hiking boots", "source_messages": [2]},
        {"id": "s2", "text": "glucose monitors", "source_messages": [0]},
        {"id": "s3", "text": "outdoor gear"},
    ],
    "region": "US",
}


class ContentPart(BaseModel):
    """One part of a message in the chat-completions shape: text parts are scored; image,
    audio and file parts are skipped (and counted in the result's `skipped_parts`)."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: str = Field(description="`text` (or `refusal`) is read; any other type is skipped.")
    text: Text | None = None
    refusal: Text | None = None


class Message(BaseModel):
    """One turn of a chat transcript, in the chat-completions message shape: `content` is a
    string, a list of parts, or null (an assistant turn that only calls tools)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    role: Role = Field(description="Who wrote the message.")
    content: Text | list[ContentPart] | None = Field(
        description="The message text, or its parts; null when the turn only calls tools."
    )
    name: str | None = Field(None, max_length=256, description="Accepted, not scored.")
    tool_calls: list[dict[str, Any]] | None = Field(
        None, description="Accepted; not scored (counted in `skipped_parts`)."
    )
    tool_call_id: str | None = Field(None, max_length=256, description="Accepted, not scored.")
    refusal: Text | None = Field(None, description="An assistant refusal's text: scored.")

    @property
    def text(self) -> str:
        """What is scored: the text, or the text and refusal parts joined by line breaks."""
        parts: list[str] = []
        if isinstance(self.content, str):
            parts.append(self.content)
        elif self.content:
            parts += [p.text or p.refusal or "" for p in self.content if _is_text(p)]
        if self.refusal:
            parts.append(self.refusal)
        return "\n".join(x for x in parts if x)

    @property
    def skipped_parts(self) -> int:
        """Parts that are not text (images, audio, files) and tool calls: not scored."""
        skipped = len(self.tool_calls or [])
        if isinstance(self.content, list):
            skipped += sum(not _is_text(p) for p in self.content)
        return skipped


def _is_text(part: ContentPart) -> bool:
    return (part.type == "text" and part.text is not None) or (
        part.type == "refusal" and part.refusal is not None
    )


class TranscriptIn(BaseModel):
    """A transcript in a batch, with an optional id echoed back."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: Text | None = Field(None, max_length=128, description="Echoed back in the result.")
    messages: list[Message] = Field(min_length=1, description="The transcript, oldest first.")


class ClassifyRequest(BaseModel):
    """One transcript (`messages`) or a batch of them (`transcripts`)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": EXAMPLE_CLASSIFY},
    )

    messages: list[Message] | None = Field(None, min_length=1, description="One transcript.")
    transcripts: list[TranscriptIn] | None = Field(None, min_length=1, description="A batch.")

    @model_validator(mode="after")
    def _one_of(self) -> ClassifyRequest:
        if (self.messages is None) == (self.transcripts is None):
            raise ValueError("give either messages or transcripts")
        return self


class ModelRef(BaseModel):
    """Which model answered."""

    name: str
    version: str


class Evidence(BaseModel):
    """Why a label is flagged: the message and the token window that scored highest."""

    label: str
    message_index: int
    window: int = Field(description="Index of the highest-scoring window of the message.")
    score: float


class LabelDecision(BaseModel):
    """Scores in [0, 1] per label, and whether each reaches its threshold."""

    scores: dict[str, float]
    flags: dict[str, bool]
    sensitive: bool = Field(description="True when any label is flagged.")
    evidence: list[Evidence] = Field(default_factory=list)


class MessageResult(LabelDecision):
    """The decision for one message (read after the message before it)."""

    index: int = Field(description="Position of the message in the transcript.")
    role: Role
    windows: int = Field(description="How many token windows of the message were scored.")
    skipped_parts: int = Field(
        0, description="Parts of the message that are not text (images, audio, tool calls)."
    )
    language: str = Field(
        description="ISO 639-1 code detected for the message (Arabizi reads as ar); a message "
        "too short or unsure to tell takes the transcript's language; und = unknown."
    )
    language_supported: bool = Field(
        description="Whether the model's judgement is known to hold in that language."
    )


class TranscriptResult(BaseModel):
    """The decision for a transcript as a whole and for each of its messages."""

    id: str | None = None
    language: str = Field(description="Language of the transcript read as a whole.")
    language_supported: bool
    transcript: LabelDecision
    messages: list[MessageResult]


class ClassifyResponse(TranscriptResult):
    """The answer for one transcript."""

    model: ModelRef


class BatchClassifyResponse(BaseModel):
    """The answers for a batch, in request order."""

    model: ModelRef
    results: list[TranscriptResult]


class Signal(BaseModel):
    """An interest signal that the pipeline wants to derive from the transcript."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: Text = Field(min_length=1, max_length=128)
    text: Text = Field(min_length=1, max_length=1000, description="The signal, e.g. a topic.")
    source_messages: list[int] | None = Field(
        None, max_length=200, description="Indices of the messages it comes from."
    )


class ScreenRequest(BaseModel):
    """A transcript, the signals wanted from it, and optionally the user's region."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [EXAMPLE_SCREEN]}
    )

    messages: list[Message] = Field(min_length=1)
    signals: list[Signal] = Field(min_length=1)
    region: str | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="ISO 3166-1 alpha-2 code of the user's country (`UK` and `EL` are read as "
        "GB and GR). Without it the signals are blocked (reason `jurisdiction`) unless the "
        "service runs with `ST_REGION_REQUIRED=false`.",
    )

    @field_validator("region")
    @classmethod
    def _iso_region(cls, value: str | None) -> str | None:
        return None if value is None else region_code(value)

    @model_validator(mode="after")
    def _unique_ids(self) -> ScreenRequest:
        seen: set[str] = set()
        for i, s in enumerate(self.signals):
            if s.id in seen:  # the caller would not know which decision is the id's
                raise ValueError(f"signals[{i}].id repeats an earlier signal's id")
            seen.add(s.id)
        return self


class Reason(BaseModel):
    """One reason a signal is blocked."""

    type: Literal["jurisdiction", "unsupported_language", "signal", "source", "transcript"]
    label: str | None = None
    message_index: int | None = None
    language: str | None = Field(None, description="For unsupported_language: the language.")


class SignalDecision(BaseModel):
    id: str
    decision: Literal["allowed", "blocked"]
    reasons: list[Reason]


class ScreenResponse(BaseModel):
    """A decision per signal. Any non-2xx answer means: use none of these signals."""

    model: ModelRef
    transcript: LabelDecision
    decisions: list[SignalDecision]


class ModelInfo(BaseModel):
    """What the served model is and how it decides."""

    name: str
    version: str
    base_model: str
    labels: list[str]
    thresholds: dict[str, float]
    languages: list[str]
    supported_languages: list[str] = Field(
        description="Languages where its judgement is known to hold; /v1/screen blocks "
        "signals from other languages unless ST_UNSUPPORTED_LANGUAGE=score."
    )
    max_length: int


class ErrorResponse(BaseModel):
    """Every error: a stable code and a readable message (never transcript text)."""

    code: str
    message: str
    errors: list[dict[str, str]] = Field(default_factory=list)
    limit: dict[str, int | str] | None = Field(None, description="The bound that was exceeded.")
