"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.metrics import ApiMetrics, RequestMetricsMiddleware
from api.routes import health, jobs, metrics, predict, reports, studies, ui
from api.services.errors import ServiceError
from api.services.limits import Admission
from api.services.ui_session import LoginRequired, ui_secret
from config.settings import Settings, get_settings
from core.broker import release_broker
from core.dispatch import Dispatcher
from db.migrate import upgrade_to_head

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, public_url: str | None = None) -> FastAPI:
    """Build the API.

    At start-up the database is upgraded to the newest schema and the broker (the
    embedded one when ``TUMORSEG_REDIS_URL`` is unset) is resolved.

    Args:
        settings: Settings to use; read from the environment when None.
        public_url: Where the API is served (``http://HOST:PORT``): the start-up log
            names the web viewer's and the OpenAPI document's addresses under it.

    Returns:
        The application; serve it with uvicorn or test it with ``TestClient``.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        upgrade_to_head(settings.sqlalchemy_url)
        dispatcher = app.state.dispatcher = Dispatcher(settings)
        admission = app.state.admission = Admission(settings, dispatcher)
        api_metrics.watch_queues(dispatcher, [settings.interactive_queue, settings.nightly_queue])
        logger.info("API ready: db=%s broker=%s", settings.sqlalchemy_url, dispatcher.redis_url)
        if public_url:
            logger.info("web viewer: %s/ui  (OpenAPI: %s/docs)", public_url, public_url)
        try:
            yield
        finally:
            api_metrics.unwatch_queues()
            admission.close()
            dispatcher.close()
            release_broker(settings)  # the embedded Redis ends with its last user

    app = FastAPI(
        title="tumorseg",
        version="1.0",
        summary="Batch tumor segmentation of whole-body MIP-PET images.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    api_metrics = app.state.metrics = ApiMetrics()
    app.add_middleware(RequestMetricsMiddleware, metrics=api_metrics)
    app.state.ui_secret = ui_secret(settings)  # random per process unless configured

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> Response:
        if ui.is_page(request):
            return ui.error_page(request, exc.status_code, exc.detail, exc.headers)
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if ui.is_page(request):
            detail = f"nothing at {request.url.path}" if exc.status_code == 404 else exc.detail
            return ui.error_page(request, exc.status_code, detail)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
        if ui.is_page(request):
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors()
            )
            return ui.error_page(request, 422, f"{request.url.path}: {problems}")
        return await request_validation_exception_handler(request, exc)

    @app.exception_handler(LoginRequired)
    async def _login_required(_request: Request, exc: LoginRequired) -> RedirectResponse:
        return RedirectResponse(f"/ui/login?next={quote(exc.next_path)}", status_code=303)

    @app.exception_handler(SQLAlchemyError)
    async def _database_error(_request: Request, exc: SQLAlchemyError) -> JSONResponse:
        logger.error("database error: %s", exc)
        return JSONResponse(
            {"detail": f"database unavailable: {type(exc).__name__}"}, status_code=503
        )

    @app.get("/", include_in_schema=False)
    async def _root() -> RedirectResponse:
        return RedirectResponse("/ui", status_code=307)

    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(jobs.router, prefix="/v1")
    app.include_router(studies.router, prefix="/v1")
    app.include_router(reports.router, prefix="/v1")
    app.include_router(predict.router)
    app.include_router(ui.router)
    app.mount("/ui/static", StaticFiles(directory=ui.STATIC_DIR), name="ui-static")
    return app
