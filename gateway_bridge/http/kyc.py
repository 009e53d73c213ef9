"""The KYC edge (docs/COMPLIANCE.md): start a player's identity check and read its state
(cashier API keys), and the provider's signed webhooks."""

from __future__ import annotations

import logging
import re

from aiohttp import web

from gateway_bridge.http import errors as http_errors
from gateway_bridge.http import validation as v
from gateway_bridge.http.cashier import client_of, json_body
from gateway_bridge.http.context import REQUEST_ID, SERVICES
from gateway_bridge.http.errors import dumps
from gateway_bridge.kyc.model import KycRefused
from gateway_bridge.kyc.service import KycService
from gateway_bridge.psp.base import PspDeclined, PspError, WebhookRejected
from gateway_bridge.shared.errors import InvalidRequest, Refused, Unavailable
from service_kit import pg

log = logging.getLogger("gateway_bridge.kyc")

_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,100}")


def _kyc(request: web.Request) -> KycService:
    kyc = request.app[SERVICES].kyc
    if kyc is None or not kyc.enabled:
        raise Refused("KYC is not enabled on this bridge (no provider configured)",
                      code="KYC_NOT_ENABLED")
    return kyc


def _player(request: web.Request) -> str:
    return v.player_id({"player_id": request.match_info["player_id"]})


def _name(body: dict[str, object], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not _NAME.fullmatch(value.strip() or "\x00"):
        raise InvalidRequest(field, "1 to 100 printable characters")
    return value.strip()


async def start(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    client = client_of(request, services)
    kyc = _kyc(request)
    player = _player(request)
    body = await json_body(request)
    first, last = _name(body, "first_name"), _name(body, "last_name")
    try:
        await kyc.start(player, first_name=first, last_name=last, actor=client)
    except KycRefused as err:
        raise Refused(f"player_id: {err.message}", code=err.code, field="player_id") from None
    except PspDeclined as err:
        raise InvalidRequest("first_name", f"the KYC provider refused the applicant "
                                           f"({err.code or err.status})") from None
    except PspError as err:
        raise Unavailable(f"the KYC provider did not answer ({err.message}); retry",
                          retry_after_s=1) from None
    return web.json_response(await kyc.view(player), status=202, dumps=dumps)


async def show(request: web.Request) -> web.Response:
    client_of(request, request.app[SERVICES])
    kyc = _kyc(request)
    return web.json_response(await kyc.view(_player(request)), dumps=dumps)


async def webhook(request: web.Request) -> web.Response:
    """Verified on the raw body before anything is read; the result is fetched from the
    provider and applied before the 200, so a webhook the bridge could not apply is
    delivered again."""
    services = request.app[SERVICES]
    request_id: str = request[REQUEST_ID]
    kyc = services.kyc
    if kyc is None or not kyc.enabled:
        return http_errors.response(404, "NOT_FOUND", "no KYC webhook endpoint",
                                    request_id=request_id)
    body = await request.read()
    try:
        outcome = await kyc.webhook(request.headers, body)
    except WebhookRejected as rejected:
        status, code = http_errors.WEBHOOK_REJECTIONS.get(rejected.cause,
                                                          (400, "WEBHOOK_MALFORMED"))
        log.warning("kyc webhook rejected", extra={"cause": rejected.cause,
                                                   "remote": request.remote,
                                                   "body_bytes": len(body)})
        services.rejected_total[("onfido", rejected.cause)] += 1
        services.rejected_unsaved[("onfido", rejected.cause)] += 1
        return http_errors.response(status, code, rejected.message, request_id=request_id)
    except (PspError, *pg.DB_ERRORS) as err:
        log.warning("kyc webhook not applied; the provider delivers again",
                    extra={"error": type(err).__name__})
        return http_errors.response(503, "UNAVAILABLE", "not applied; deliver again later",
                                    request_id=request_id)
    log.info("kyc webhook", extra={"outcome": outcome})
    return web.json_response({"received": True})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/players/{player_id}/kyc", start)
    app.router.add_get("/v1/players/{player_id}/kyc", show)
    app.router.add_post("/webhooks/kyc/onfido", webhook)
