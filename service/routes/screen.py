"""`POST /v1/screen`: the signal gate. Fail-closed: any non-2xx answer means use none."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from service.classifier import model_role
from service.gate import decide
from service.routes.deps import (
    ERRORS,
    Authorized,
    Scoring,
    ScoringDep,
    ServiceError,
    bound,
    check_messages,
    model_ref,
    serialized,
)
from service.routes.results import transcript_result
from service.schemas import Reason, ScreenRequest, ScreenResponse, SignalDecision

router = APIRouter()


async def screen_body(ctx: Scoring, body: ScreenRequest) -> ScreenResponse:
    """The answer to a valid request (also served by the direct routes)."""
    engine, settings = ctx.engine, ctx.settings
    check_messages(settings, body.messages)
    bound("max_signals", settings.max_signals, len(body.signals))
    for k, s in enumerate(body.signals):
        for j, i in enumerate(s.source_messages or []):
            if not 0 <= i < len(body.messages):
                raise ServiceError(
                    422,
                    "invalid_request",
                    f"signals[{k}].source_messages[{j}]: not the index of a message",
                )
    contents = [m.text for m in body.messages]
    [reading] = await engine.read(
        [(contents, [model_role(m.role) for m in body.messages])], ctx.tenant
    )
    result, langs = reading.score, reading.languages
    unsupported = langs.unsupported() if settings.unsupported_language == "block" else []
    signal_scores = await engine.score([s.text for s in body.signals], tenant=ctx.tenant)
    blocked_region = body.region in ctx.regions if body.region else settings.region_required
    decisions = []
    for s, score in zip(body.signals, signal_scores, strict=True):
        d = decide(s.id, score, s.source_messages, result, blocked_region, unsupported)
        decisions.append(
            SignalDecision(
                id=s.id,
                decision="allowed" if d.allowed else "blocked",
                reasons=[
                    Reason(
                        type=r.type,
                        label=r.label,
                        message_index=r.message_index,
                        language=r.language,
                    )
                    for r in d.reasons
                ],
            )
        )
    single = transcript_result(body.messages, result, langs)
    return ScreenResponse(
        model=model_ref(engine), transcript=single.transcript, decisions=decisions
    )


@router.post(
    "/v1/screen",
    response_model=ScreenResponse,
    summary="Allow or block each interest signal derived from a transcript.",
    description="Fail-closed: any non-2xx answer means use none of these signals.",
    dependencies=[Authorized],
    responses=ERRORS,
)
async def screen(body: ScreenRequest, ctx: ScoringDep) -> Response:
    return serialized(await screen_body(ctx, body))
