"""Admin: reload the registry's current model, set or stop the shadow (bearer token; off without one)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request

from fer.serving.deps import AppSettings, Holder
from fer.serving.errors import ApiError
from fer.serving.holder import ModelRefused
from fer.serving.schemas import ReloadOut, ShadowIn, ShadowOut, errors

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


@router.post(
    "/admin/shadow",
    summary="Serve a candidate version in shadow",
    response_model=ShadowOut,
    responses=errors(400, 401, 403, 409),
)
async def admin_set_shadow(request: Request, settings: AppSettings, holder: Holder, body: ShadowIn) -> ShadowOut:
    """The candidate answers a share of live faces after each response (never adding latency);
    Prometheus gets its agreement with production, its confidence and its latency. Replaces any
    shadow; a candidate that cannot load is refused (409) and the old shadow stays."""
    require_admin(request, settings)
    try:
        return ShadowOut.model_validate(await holder.set_shadow(body.model, body.share))
    except ModelRefused as e:
        raise ApiError(409, "model_refused", f"{e}; the previous shadow (if any) stays") from None


# A separate path, not DELETE /admin/shadow: Starlette's 405 lists only the first route's
# methods in `Allow`, so two methods on one path in two routes break the HTTP contract.
@router.post("/admin/shadow/off", summary="Stop shadowing", response_model=ShadowOut, responses=errors(401, 403))
async def admin_clear_shadow(request: Request, settings: AppSettings, holder: Holder) -> ShadowOut:
    require_admin(request, settings)
    return ShadowOut.model_validate(await holder.clear_shadow())
