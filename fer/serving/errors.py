"""Domain errors to HTTP: one JSON error shape (`{"error", "detail"}`) for every refusal."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fer.guards import BodyTimeout, BodyTooLarge

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Raised anywhere in a route (or a dependency) to answer with the API's error shape."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def error_response(status: int, code: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI, max_upload_bytes: int, user_limits: dict[str, int] | None = None) -> None:
    """Map validation errors, Starlette's HTTP errors, `ApiError` and anything unexpected."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        missing = [e for e in exc.errors() if e.get("type") == "missing" and "file" in e.get("loc", ())]
        if any(e.get("type") == "missing" and "files" in e.get("loc", ()) for e in exc.errors()):
            return error_response(
                400,
                "missing_files",
                "send the images as multipart/form-data in the repeated field 'files' "
                "(e.g. curl -F files=@a.jpg -F files=@b.jpg http://host/predict/batch)",
            )
        if missing:
            return error_response(
                400,
                "missing_file",
                "send the image as multipart/form-data in the field 'file' "
                "(e.g. curl -F file=@photo.jpg http://host/predict)",
            )
        return error_response(400, "bad_request", "; ".join(str(e.get("msg")) for e in exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if isinstance(exc, BodyTooLarge):
            return error_response(
                413,
                "upload_too_large",
                f"upload exceeds the limit of {(user_limits or {}).get(request.url.path, max_upload_bytes):,} bytes",
                {"connection": "close"},
            )  # close: the rest of the body is never read
        if isinstance(exc, BodyTimeout):
            return error_response(408, "body_timeout", str(exc.detail), {"connection": "close"})
        # Keep the exception's headers: a 405 must say which methods are allowed (RFC 9110).
        return error_response(exc.status_code, "http_error", str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # pragma: no cover - last line of defence
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, "internal_error", "unexpected server error; it has been logged")
