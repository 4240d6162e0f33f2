"""Admin: reload the registry's current model (bearer token; disabled without one)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request

from fer.serving.deps import AppSettings, Holder
from fer.serving.errors import ApiError
from fer.serving.holder import ModelRefused
from fer.serving.schemas import ReloadOut, errors

router = APIRouter(tags=["ops"])


def require_admin(request: Request, settings) -> None:
    """Raise 403 when admin is disabled, 401 for a missing or wrong bearer token."""
    if not settings.admin_token:
        raise ApiError(403, "admin_disabled", "set FER_ADMIN_TOKEN to enable admin endpoints")
    auth = request.headers.get("authorization", "")
    token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
    if not hmac.compare_digest(token.encode(), settings.admin_token.encode()):
        raise ApiError(401, "unauthorized", "missing or wrong bearer token", {"www-authenticate": "Bearer"})


@router.post(
    "/admin/reload",
    summary="Load the registry's current production model",
    response_model=ReloadOut,
    responses=errors(400, 401, 403, 409),
)
async def admin_reload(request: Request, settings: AppSettings, holder: Holder, force: bool = False) -> ReloadOut:
    """Requires `Authorization: Bearer <FER_ADMIN_TOKEN>`. Disabled (403) when no token is set."""
    require_admin(request, settings)
    try:
        return ReloadOut.model_validate(await holder.reload(force=force))
    except ModelRefused as e:
        raise ApiError(409, "model_refused", f"{e}; the previous model keeps serving") from None
