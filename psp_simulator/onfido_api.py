"""The simulated KYC provider: a subset of Onfido's API v3.6 (`Authorization: Token
token=...`) under `/onfido`, and its webhooks signed with `kyc.onfido.signature`.

    POST /onfido/v3.6/applicants        {first_name, last_name, external_id} -> applicant
    POST /onfido/v3.6/checks            {applicant_id, report_names} -> check, in_progress
    GET  /onfido/v3.6/checks/{id}       the check (status, result)
    GET  /onfido/v3.6/applicants/{id}   the applicant
    GET  /onfido/v3.6/reports?check_id= the check's reports; the document report's
                                        properties carry date_of_birth, date_of_expiry,
                                        issuing_country

    POST /_sim/kyc/checks/{id}/complete {"result": "clear"|"consider", "dob"?, "country"?,
                                         "expires"?, "forge"?: true, "deliver"?: false}

Completing a check sends `check.completed` to {webhook_base_url}/webhooks/kyc/onfido:
signed with the webhook token, or with a wrong one (`forge`), or not at all (`deliver`:
false, a provider that never answers). Documents say born 1990-01-01, issued in GBR, valid
until 2035-01-01, unless the completion says otherwise.
"""

from __future__ import annotations

import hmac
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from aiohttp import web

from gateway_bridge.kyc.onfido import SIGNATURE_HEADER, signature
from psp_simulator.delivery import Webhook
from psp_simulator.state import ControlError, Simulator, json_response

PREFIX = "/onfido/v3.6"
OBJECTS_MAX = 10_000


@dataclass(slots=True)
class _Applicant:
    id: str
    first_name: str
    last_name: str
    external_id: str
    dob: str = "1990-01-01"
    country: str = "GBR"
    expires: str = "2035-01-01"


@dataclass(slots=True)
class _Check:
    id: str
    applicant_id: str
    status: str = "in_progress"
    result: str | None = None
    completed_at: str = ""
    reports: list[str] = field(default_factory=list)


class OnfidoSim:
    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        token = sim.settings.onfido_api_token
        self._authorization = f"Token token={token}".encode() if token else b""
        self._webhook_token = sim.settings.onfido_webhook_token
        self._applicants: dict[str, _Applicant] = {}
        self._checks: dict[str, _Check] = {}
        self._ids = itertools.count(1)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(f"{PREFIX}/applicants", self.create_applicant),
            web.post(f"{PREFIX}/checks", self.create_check),
            web.get(f"{PREFIX}/checks/{{ref}}", self.get_check),
            web.get(f"{PREFIX}/applicants/{{ref}}", self.get_applicant),
            web.get(f"{PREFIX}/reports", self.list_reports),
            web.post("/_sim/kyc/checks/{ref}/complete", self.complete),
        ]

    def _new_id(self) -> str:
        return f"{self._sim.rng.getrandbits(64):016x}-{next(self._ids):06d}"

    def _refused(self, request: web.Request) -> web.Response | None:
        given = request.headers.get("Authorization", "").encode()
        if not self._authorization or not hmac.compare_digest(given, self._authorization):
            return json_response(401, {"error": {"type": "authorization_error",
                                                 "message": "Invalid token"}})
        return None

    async def _payload(self, request: web.Request) -> dict[str, object] | web.Response:
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            return json_response(422, {"error": {"type": "validation_error",
                                                 "message": "a JSON object is required"}})
        return payload

    def _bounded(self, table: dict[str, object]) -> None:
        while len(table) > OBJECTS_MAX:
            table.pop(next(iter(table)))

    async def create_applicant(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        payload = await self._payload(request)
        if isinstance(payload, web.Response):
            return payload
        first, last = payload.get("first_name"), payload.get("last_name")
        if not isinstance(first, str) or not isinstance(last, str) or not first or not last:
            return json_response(422, {"error": {"type": "validation_error",
                                                 "message": "first_name and last_name"}})
        applicant = _Applicant(self._new_id(), first, last, str(payload.get("external_id", "")))
        self._applicants[applicant.id] = applicant
        self._bounded(self._applicants)  # type: ignore[arg-type]
        return json_response(201, self._applicant_view(applicant))

    async def create_check(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        payload = await self._payload(request)
        if isinstance(payload, web.Response):
            return payload
        applicant_id = payload.get("applicant_id")
        if not isinstance(applicant_id, str) or applicant_id not in self._applicants:
            return json_response(422, {"error": {"type": "validation_error",
                                                 "message": "unknown applicant_id"}})
        reports = payload.get("report_names")
        check = _Check(self._new_id(), applicant_id,
                       reports=[str(r) for r in reports] if isinstance(reports, list) else [])
        self._checks[check.id] = check
        self._bounded(self._checks)  # type: ignore[arg-type]
        return json_response(201, self._check_view(check))

    async def get_check(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        check = self._checks.get(request.match_info["ref"])
        if check is None:
            return json_response(404, {"error": {"type": "resource_not_found"}})
        return json_response(200, self._check_view(check))

    async def get_applicant(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        applicant = self._applicants.get(request.match_info["ref"])
        if applicant is None:
            return json_response(404, {"error": {"type": "resource_not_found"}})
        return json_response(200, self._applicant_view(applicant))

    async def list_reports(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        check = self._checks.get(request.query.get("check_id", ""))
        if check is None:
            return json_response(404, {"error": {"type": "resource_not_found"}})
        a = self._applicants[check.applicant_id]
        done = check.status == "complete"
        reports = [{"id": f"{check.id}-{name}", "name": name,
                    "status": "complete" if done else "awaiting_data",
                    "result": check.result if done else None,
                    "properties": ({"date_of_birth": a.dob, "date_of_expiry": a.expires,
                                    "issuing_country": a.country}
                                   if name == "document" and done else {})}
                   for name in check.reports or ["document"]]
        return json_response(200, {"reports": reports})

    async def complete(self, request: web.Request) -> web.Response:
        check = self._checks.get(request.match_info["ref"])
        if check is None:
            raise ControlError(404, f"no onfido check {request.match_info['ref']!r}")
        body = orjson.loads(await request.read() or b"{}")
        if not isinstance(body, dict) or body.get("result") not in ("clear", "consider"):
            raise ControlError(400, 'result: "clear" or "consider"')
        applicant = self._applicants[check.applicant_id]
        applicant.dob = str(body.get("dob", applicant.dob))
        applicant.country = str(body.get("country", applicant.country)).upper()
        applicant.expires = str(body.get("expires", applicant.expires))
        check.status, check.result = "complete", str(body["result"])
        check.completed_at = datetime.now(UTC).isoformat(timespec="seconds").replace(
            "+00:00", "Z")
        if body.get("deliver", True) is not False:
            self._sim.deliver([self._webhook(check, forged=bool(body.get("forge")))])
        return json_response(200, self._check_view(check))

    def _webhook(self, check: _Check, *, forged: bool) -> Webhook:
        event = {"payload": {"resource_type": "check", "action": "check.completed",
                             "object": {"id": check.id, "status": "complete",
                                        "completed_at_iso8601": check.completed_at,
                                        "href": f"https://api.onfido.com/v3.6/checks/"
                                                f"{check.id}"}}}
        body = orjson.dumps(event)
        token = "forged-" + self._webhook_token if forged else self._webhook_token

        def headers(raw: bytes, now_s: int) -> dict[str, str]:
            del now_s
            return {SIGNATURE_HEADER: signature(token, raw),
                    "Content-Type": "application/json"}

        url = f"{self._sim.settings.webhook_base_url.rstrip('/')}/webhooks/kyc/onfido"
        return Webhook(psp="onfido", event_key=f"{check.id}:completed",
                       event_type="check.completed", url=url, body=body, headers=headers)

    @staticmethod
    def _check_view(check: _Check) -> dict[str, object]:
        return {"id": check.id, "applicant_id": check.applicant_id, "status": check.status,
                "result": check.result, "report_ids": [], "report_names": check.reports,
                "href": f"/v3.6/checks/{check.id}"}

    @staticmethod
    def _applicant_view(a: _Applicant) -> dict[str, object]:
        return {"id": a.id, "first_name": a.first_name, "last_name": a.last_name,
                "external_id": a.external_id, "dob": a.dob,
                "address": {"country": a.country}}
