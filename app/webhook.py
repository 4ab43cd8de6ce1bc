"""POST /webhook: verify, parse once, decide, then one Redis round trip; nothing else.

The handlers decide from the payload alone (a steering comment also asks whether its target has
a task running). What they ask to enqueue is held until they are done, then one Lua script
claims the delivery id and, only if it is new, writes the RQ job and queues it: dedupe and
enqueue are one atomic step, so two racing copies of a delivery start one task.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson
import structlog
from flask import Blueprint, Flask, Request, Response, current_app, request
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job
from rq.utils import now
from werkzeug.exceptions import HTTPException

from app.metrics import ReceiverMetrics
from app.router import Context, Delivery, Enqueued, Router
from app.signature import verify_signature
from codexbot import keys
from codexbot.settings import Settings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

blueprint = Blueprint("webhook", __name__)
log = structlog.get_logger()

MAX_BODY_BYTES = 25 * 1024 * 1024  # GitHub caps deliveries at 25 MB
INTAKE_TIMEOUT = 120
DELIVERY_ID = re.compile(r"^[A-Za-z0-9-]{1,100}$")
# GitHub event names are snake_case and may carry digits (projects_v2_item).
EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
IGNORED_EVENTS = {"ping", "installation", "installation_repositories"}
JOB_RESULT_TTL = 7 * 24 * 3600
JSON_TYPE = {"Content-Type": "application/json"}

# KEYS: delivery key, job hash, queue list, rq's set of queues.
# ARGV: delivery TTL, task id, job id, queue key, then the job hash's field/value pairs.
# Returns {1, task id} when the delivery is new and the job was queued, else {0, earlier task id}.
# The writes are what rq's own Queue.enqueue makes (Job.save, RPUSH, SADD rq:queues), so an
# ordinary RQ worker runs the job.
# Why not RQ's public API: `Queue.enqueue_job(job, unique=True)` is atomic too (its own script
# keyed by the job id, which is the delivery's), but costs two round trips (SADD rq:queues, then
# the script). Measured in process on 2 busy cores, 2,000 enqueue-path deliveries x 5 interleaved
# rounds (20 % duplicates): this script 287 us CPU and 709 us wall per delivery, RQ's 422 us and
# 1,071 us (+47 %, +51 %); about +22 % CPU per request over bench.ingest's mix, above the 10 %
# the public API may cost. bench.ingest itself (probot vs granian 2x1, --duration 8 --rounds 3)
# was too noisy on the shared machine to settle it: ratio by round 1.56, 1.68, 1.29 with this
# script, 0.95, 0.70, 0.72 with RQ's.
CLAIM_AND_ENQUEUE = """
local earlier = redis.call("GET", KEYS[1])
if earlier then
  return {0, earlier}
end
redis.call("SET", KEYS[1], ARGV[2], "EX", tonumber(ARGV[1]))
redis.call("HSET", KEYS[2], unpack(ARGV, 5))
redis.call("RPUSH", KEYS[3], ARGV[3])
redis.call("SADD", KEYS[4], ARGV[4])
return {1, ARGV[2]}
"""


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _text(status: int, message: str) -> Response:
    return Response(message + "\n", status, {"Content-Type": "text/plain; charset=utf-8"})


def _parse(body: bytes, content_type: str) -> dict[str, Any]:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        raw: bytes | str = body
    elif media_type == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(body.decode("utf-8"), strict_parsing=False)
        except UnicodeDecodeError:
            raise BadRequest(400, "form body is not UTF-8") from None
        if "payload" not in fields:
            raise BadRequest(400, "form body has no payload field")
        raw = fields["payload"][0]
    else:
        raise BadRequest(415, "unsupported content type: send application/json")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:  # also too deep (orjson stops at 1024 levels), bad UTF-8
        raise BadRequest(400, "body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise BadRequest(400, "payload must be a JSON object")
    return payload


class Intake:
    """Turns a handler's enqueue request into an RQ job, written by one Lua script call."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.queue = Queue(settings.codex_fast_queue, connection=redis)
        self.script = redis.register_script(CLAIM_AND_ENQUEUE)

    def job(self, function: str, delivery: Delivery, kwargs: dict[str, Any]) -> Job:
        """The job ``Queue.enqueue`` would write, built in memory (no Redis call)."""
        job = self.queue.create_job(
            function,
            kwargs={**kwargs, "task_id": delivery.id, "delivery_id": delivery.id},
            job_id=keys.intake_job_id(delivery.id),
            timeout=INTAKE_TIMEOUT,
            result_ttl=JOB_RESULT_TTL,
            failure_ttl=JOB_RESULT_TTL,
            description=f"{function} {delivery.event}.{delivery.action}",
        )
        job.enqueued_at = now()
        return job

    def claim_and_enqueue(self, delivery: Delivery, job: Job) -> tuple[bool, str]:
        """(True, task id) if this delivery is new and its job is queued; else (False, earlier)."""
        fields: list[Any] = []
        for name, value in job.to_dict().items():
            if value is not None:
                fields += [name, value]
        new, task_id = self.script(
            keys=[keys.delivery(delivery.id), job.key, self.queue.key, Queue.redis_queues_keys],
            args=[keys.DELIVERY_TTL, delivery.id, job.id, self.queue.key, *fields],
        )
        return bool(new), task_id.decode() if isinstance(task_id, bytes) else str(task_id)


class Collect:
    """``Context.enqueue`` for one delivery: keeps the first job asked for, to write later."""

    def __init__(self, intake: Intake) -> None:
        self.intake = intake
        self.job: Job | None = None

    def __call__(self, function: str, delivery: Delivery, **kwargs: Any) -> Enqueued:
        if self.job is None:
            self.job = self.intake.job(function, delivery, kwargs)
        else:  # one job per delivery: its id is the delivery's
            log.warning("second enqueue for one delivery ignored", function=function)
        return Enqueued(task_id=delivery.id)


def _decide(flask_app: Flask, req: Request) -> tuple[Response, str, str]:
    """Verify, parse, decide, write: (response, outcome, event) for the caller to count."""
    settings: Settings = flask_app.config["SETTINGS"]
    redis: Redis = flask_app.extensions["redis"]
    router: Router = flask_app.extensions["router"]
    intake: Intake = flask_app.extensions["intake"]

    if req.content_length is not None and req.content_length > MAX_BODY_BYTES:
        return _text(413, "payload too large"), "too_large", ""
    body = req.get_data(cache=False)
    if len(body) > MAX_BODY_BYTES:
        return _text(413, "payload too large"), "too_large", ""
    headers = req.headers
    if not verify_signature(body, headers.get("X-Hub-Signature-256"), settings.webhook_secrets()):
        return _text(401, "bad signature"), "bad_signature", ""

    event = headers.get("X-GitHub-Event", "").strip()
    delivery_id = headers.get("X-GitHub-Delivery", "").strip()
    try:
        if not EVENT_NAME.match(event):
            raise BadRequest(400, "missing or malformed X-GitHub-Event header")
        if not DELIVERY_ID.match(delivery_id):
            raise BadRequest(400, "missing or malformed X-GitHub-Delivery header")
        payload = _parse(body, headers.get("Content-Type", ""))
    except BadRequest as error:
        outcome = "unsupported_type" if error.status == 415 else "bad_request"
        return _text(error.status, str(error)), outcome, ""

    structlog.contextvars.bind_contextvars(delivery_id=delivery_id, event_name=event)
    delivery = Delivery(id=delivery_id, event=event, payload=payload)
    if event in IGNORED_EVENTS or not router.handles(event):
        log.info("delivery ignored", action=delivery.action)
        return Response(status=204), "ignored", event

    collect = Collect(intake)
    router.dispatch(delivery, Context(settings, collect, redis))
    if collect.job is None:
        log.info("nothing to do", action=delivery.action)
        return Response(status=204), "nothing_to_do", event

    new, task_id = intake.claim_and_enqueue(delivery, collect.job)
    structlog.contextvars.bind_contextvars(task_id=task_id)
    if not new:
        log.info("duplicate delivery")
        if not task_id:  # recorded by an older receiver that claimed before deciding
            return Response(status=204), "duplicate", event
        answer = orjson.dumps({"task_id": task_id, "duplicate": True})
        return Response(answer, 202, JSON_TYPE), "duplicate", event
    log.info("enqueued", function=collect.job.func_name, action=delivery.action)
    return Response(orjson.dumps({"task_id": task_id}), 202, JSON_TYPE), "enqueued", event


def receive(flask_app: Flask, req: Request) -> Response:
    """Answer one delivery and count it."""
    started = time.perf_counter()
    response, outcome, event = _decide(flask_app, req)
    metrics: ReceiverMetrics = flask_app.extensions["metrics"]
    metrics.count(event, outcome, time.perf_counter() - started)
    return response


@blueprint.post("/webhook")
def receive_webhook() -> Response:
    """The route, for Flask's url map (405 to other methods); FastPath answers POSTs first."""
    return receive(current_app._get_current_object(), request._get_current_object())  # type: ignore[attr-defined]


class WebhookRequest(Request):
    max_content_length = MAX_BODY_BYTES + 1024  # a chunked body without a length stops here too


class FastPath:
    """WSGI middleware: POST /webhook straight to ``receive``, without Flask's request context.

    The same code as the blueprint's view, minus about 80 microseconds of Flask per delivery (a
    third of the receiver's CPU for the usual mix; see README, Performance). Every other request
    goes through Flask as usual.
    """

    def __init__(self, flask_app: Flask) -> None:
        self.flask_app = flask_app
        self.inner = flask_app.wsgi_app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/webhook" or environ.get("REQUEST_METHOD") != "POST":
            return self.inner(environ, start_response)
        structlog.contextvars.clear_contextvars()
        try:
            response = receive(self.flask_app, WebhookRequest(environ))
        except HTTPException as error:
            response = _text(error.code or 400, f"{error.code} {(error.name or '').lower()}")
        except RedisError as error:
            log.error("redis unavailable", error=str(error))
            response = _text(503, "503 queue unavailable; redeliver it (codexbot redeliver)")
        except Exception:
            log.exception("unhandled error", path="/webhook")
            response = _text(500, "internal error; see the receiver's logs")
        return response(environ, start_response)
