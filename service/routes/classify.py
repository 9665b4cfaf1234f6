"""`POST /v1/classify`: a transcript, or a batch of them, and each of their messages."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from service.classifier import model_role
from service.routes.deps import (
    ERRORS,
    Authorized,
    Scoring,
    ScoringDep,
    bound,
    check_messages,
    count_flags,
    model_ref,
    serialized,
)
from service.routes.results import transcript_result
from service.schemas import BatchClassifyResponse, ClassifyRequest, ClassifyResponse

router = APIRouter()


async def classify_body(
    ctx: Scoring, body: ClassifyRequest
) -> ClassifyResponse | BatchClassifyResponse:
    """The answer to a valid request (also served by the direct routes)."""
    engine, settings = ctx.engine, ctx.settings
    if body.messages is not None:
        check_messages(settings, body.messages)
        contents = [m.text for m in body.messages]
        [reading] = await engine.read(
            [(contents, [model_role(m.role) for m in body.messages])], ctx.tenant
        )
        count_flags(ctx.metrics, reading.score)
        single = transcript_result(body.messages, reading.score, reading.languages)
        return ClassifyResponse(model=model_ref(engine), **dict(single))
    transcripts = body.transcripts or []
    bound("max_transcripts", settings.max_transcripts, len(transcripts))
    for t in transcripts:
        check_messages(settings, t.messages)
    # every transcript's windows counted as one request, scored in shared model runs
    readings = await engine.read(
        [
            ([m.text for m in t.messages], [model_role(m.role) for m in t.messages])
            for t in transcripts
        ],
        ctx.tenant,
    )
    results = []
    for t, r in zip(transcripts, readings, strict=True):
        count_flags(ctx.metrics, r.score)
        results.append(transcript_result(t.messages, r.score, r.languages, t.id))
    return BatchClassifyResponse(model=model_ref(engine), results=results)


@router.post(
    "/v1/classify",
    response_model=ClassifyResponse | BatchClassifyResponse,
    summary="Classify a transcript, or a batch, and each of their messages.",
    dependencies=[Authorized],
    responses=ERRORS,
)
async def classify(body: ClassifyRequest, ctx: ScoringDep) -> Response:
    return serialized(await classify_body(ctx, body))
