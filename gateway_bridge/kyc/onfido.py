"""Onfido, the KYC provider: applicants and checks over its REST API (v3.6), and its signed
webhooks.

Signature (docs/COMPLIANCE.md): `X-SHA2-Signature` is the hex HMAC-SHA256 of the raw body
under the webhook token. Onfido signs no timestamp, so a replayed webhook verifies; it is
harmless here: a webhook only says "check X completed", the bridge then asks the API for
the result, and only the player's current check counts. The signing helpers are pure and
module-level so the simulator signs with the very same code.

A completed check's result is `clear` (verified) or `consider` (rejected). What it
established comes from its document report's properties: the date of birth, the document's
expiry and its issuing country (ISO 3166-1 alpha-3, as Onfido gives it), which stands for
the country of residence until a proof-of-address report is asked for.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from urllib.parse import quote

import orjson

from gateway_bridge.kyc.model import CheckResult
from gateway_bridge.psp.base import (
    WEBHOOK_BODY_MAX_BYTES,
    PspConfig,
    PspUnavailable,
    ShapeError,
    WebhookRejected,
    header_value,
    json_object,
    required_text,
    text_field,
)
from gateway_bridge.psp.outbound import OutboundClient

NAME = "onfido"
API = "/v3.6"
SIGNATURE_HEADER = "X-SHA2-Signature"
# The reports a check asks for: an identity document and a face match.
REPORTS = ("document", "facial_similarity_photo")


def signature(token: str, body: bytes) -> str:
    return hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


def verify(header: str | None, body: bytes, *, token: str) -> None:
    """WebhookRejected (unsigned, signature, malformed) unless `header` signs `body`."""
    if not header:
        raise WebhookRejected("unsigned", f"no {SIGNATURE_HEADER} header")
    if len(header) != 64:
        raise WebhookRejected("malformed", f"{SIGNATURE_HEADER}: 64 hex characters")
    if not hmac.compare_digest(signature(token, body).encode(),
                               header.lower().encode("ascii", "replace")):
        raise WebhookRejected("signature", f"{SIGNATURE_HEADER} does not match the body")


@dataclass(frozen=True, slots=True)
class KycEvent:
    """What a webhook says: a resource (a check) reached a state."""

    event_key: str  # unique per delivery content: action + object id + completion time
    action: str  # check.completed, check.started, ...
    check_id: str


def read_webhook(headers: Mapping[str, str], body: bytes, *, token: str) -> KycEvent:
    if len(body) > WEBHOOK_BODY_MAX_BYTES:
        raise WebhookRejected("malformed", "body too large")
    verify(header_value(headers, SIGNATURE_HEADER), body, token=token)
    try:
        payload = json_object(json_object(orjson.loads(body), "body").get("payload"),
                              "payload")
        obj = json_object(payload.get("object"), "payload.object")
        action = required_text(payload, "action")
        check_id = required_text(obj, "id")
        done = text_field(obj, "completed_at_iso8601") or ""
    except orjson.JSONDecodeError:
        raise WebhookRejected("malformed", "body is not JSON") from None
    except ShapeError as exc:
        raise WebhookRejected("malformed", str(exc)) from None
    return KycEvent(event_key=f"{action}:{check_id}:{done}", action=action, check_id=check_id)


@dataclass(frozen=True, slots=True)
class StartedCheck:
    applicant_id: str
    check_id: str


class OnfidoClient:
    """Onfido's REST API through the bridge's outbound client (timeouts, retries with the
    same idempotency key, a circuit breaker). `config.api_key` is the API token."""

    name = NAME

    def __init__(self, config: PspConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self.client = OutboundClient(config, auth_headers={
            "Authorization": f"Token token={config.api_key}"}, clock=clock)

    async def close(self) -> None:
        await self.client.close()

    async def _post(self, path: str, payload: Mapping[str, object],
                    key: str) -> dict[str, object]:
        response = await self.client.request("POST", path, body=orjson.dumps(payload),
                                             content_type="application/json",
                                             idempotency_key=key)
        return _object(response.json(NAME))

    async def _get(self, path: str) -> dict[str, object]:
        return _object((await self.client.request("GET", path)).json(NAME))

    async def start(self, *, player_id: str, first_name: str, last_name: str, attempt: int,
                    applicant_id: str = "") -> StartedCheck:
        """A new check for the player's applicant, created once (`applicant_id` given: the
        player has one already)."""
        try:
            if not applicant_id:
                applicant = await self._post(f"{API}/applicants", {
                    "first_name": first_name, "last_name": last_name,
                    "external_id": player_id}, f"kyc-applicant-{player_id}")
                applicant_id = required_text(applicant, "id")
            check = await self._post(f"{API}/checks", {
                "applicant_id": applicant_id, "report_names": list(REPORTS)},
                f"kyc-check-{player_id}-{attempt}")
            return StartedCheck(applicant_id, required_text(check, "id"))
        except ShapeError as exc:
            raise PspUnavailable(NAME, f"unexpected answer: {exc}") from None

    async def result(self, check_id: str) -> CheckResult | None:
        """The check's result with what its document report established; None while it
        runs."""
        ref = quote(check_id, safe="")
        check = await self._get(f"{API}/checks/{ref}")
        try:
            if text_field(check, "status") != "complete":
                return None
            outcome = required_text(check, "result")
            reports = (await self._get(f"{API}/reports?check_id={ref}")).get("reports")
            document: dict[str, object] = {}
            for report in reports if isinstance(reports, list) else []:
                if isinstance(report, dict) and report.get("name") == "document":
                    properties = report.get("properties")
                    document = properties if isinstance(properties, dict) else {}
            dob = text_field(document, "date_of_birth")
            expiry = text_field(document, "date_of_expiry")
            return CheckResult(check_id=check_id, clear=outcome == "clear",
                               birth_date=date.fromisoformat(dob) if dob else None,
                               country=(text_field(document, "issuing_country")
                                        or "").upper(),
                               documents_expire_on=(date.fromisoformat(expiry) if expiry
                                                    else None))
        except (ShapeError, ValueError) as exc:
            raise PspUnavailable(NAME, f"unexpected answer: {exc}") from None


def _object(data: object) -> dict[str, object]:
    try:
        return json_object(data, "response")
    except ShapeError as exc:
        raise PspUnavailable(NAME, f"unexpected answer: {exc}") from None
