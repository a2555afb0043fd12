"""Prometheus metrics of this API process."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import MetricsDep

# open like /healthz and /readyz (for the scraper); left out of the OpenAPI document
router = APIRouter(tags=["health"], include_in_schema=False)


@router.get("/metrics")
def metrics(api_metrics: MetricsDep) -> Response:
    """Requests by route and status, their latency, and the depth of each queue."""
    body, content_type = api_metrics.render()  # a sync route: the depths are read from Redis
    return Response(body, media_type=content_type)
