"""Operations: liveness, readiness, Prometheus metrics and the served model."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.engine import ScoringEngine
from service.routes.deps import ERRORS, Authorized, EngineDep, MetricsDep
from service.schemas import ErrorResponse, ModelInfo

router = APIRouter()


@router.get("/healthz", summary="The process is alive.")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The model is loaded and answering.",
    responses={503: {"model": ErrorResponse}},
)
async def readyz(engine: EngineDep) -> dict[str, str]:
    await engine.batcher.submit(engine.classifier.encode_items(["ready?"])[0])
    return {"status": "ready", "model": engine.classifier.artifact.name}


@router.get("/metrics", summary="Prometheus metrics.", response_class=Response)
async def prometheus(request: Request, metrics: MetricsDep) -> Response:
    engine: ScoringEngine | None = getattr(request.app.state, "engine", None)
    if engine is not None:
        metrics.queue.set(engine.batcher.stats.queued_windows)
        metrics.cache.set_counts(engine.cache.hits, engine.cache.misses)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/v1/model",
    response_model=ModelInfo,
    summary="The served model.",
    dependencies=[Authorized],
    responses=ERRORS,
)
async def model_info(engine: EngineDep) -> ModelInfo:
    a = engine.classifier.artifact
    return ModelInfo(
        name=a.name,
        version=a.version,
        base_model=a.base_model,
        labels=list(a.labels),
        thresholds=a.thresholds,
        languages=list(a.languages),
        supported_languages=sorted(a.supported_languages),
        max_length=a.max_length,
    )
