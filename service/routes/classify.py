"""`POST /v1/classify`: a transcript, or a batch of them, and each of their messages."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from service.classifier import model_role
from service.routes.deps import (
    ERRORS,
    Authorized,
    EngineDep,
    MetricsDep,
    SettingsDep,
    TenantDep,
    bound,
    check_messages,
    count_flags,
    model_ref,
    serialized,
)
from service.routes.results import transcript_result
from service.schemas import BatchClassifyResponse, ClassifyRequest, ClassifyResponse

router = APIRouter()


@router.post(
    "/v1/classify",
    response_model=ClassifyResponse | BatchClassifyResponse,
    summary="Classify a transcript, or a batch, and each of their messages.",
    dependencies=[Authorized],
    responses=ERRORS,
)
async def classify(
    body: ClassifyRequest,
    engine: EngineDep,
    tenant: TenantDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> Response:
    if body.messages is not None:
        check_messages(settings, body.messages)
        contents = [m.text for m in body.messages]
        [reading] = await engine.read(
            [(contents, [model_role(m.role) for m in body.messages])], tenant
        )
        count_flags(metrics, reading.score)
        single = transcript_result(body.messages, reading.score, reading.languages)
        return serialized(ClassifyResponse(model=model_ref(engine), **dict(single)))
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
        tenant,
    )
    results = []
    for t, r in zip(transcripts, readings, strict=True):
        count_flags(metrics, r.score)
        results.append(transcript_result(t.messages, r.score, r.languages, t.id))
    return serialized(BatchClassifyResponse(model=model_ref(engine), results=results))
