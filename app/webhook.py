"""POST /webhook: verify, parse, decide, enqueue. Never clones, calls a model or sleeps."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs

import structlog
from flask import Blueprint, current_app, jsonify, request
from redis import Redis
from rq import Queue

from app.router import Context, Delivery, Enqueued, Router
from app.signature import verify_signature
from codexbot.settings import Settings

blueprint = Blueprint("webhook", __name__)
log = structlog.get_logger()

MAX_BODY_BYTES = 25 * 1024 * 1024  # GitHub caps deliveries at 25 MB
DEDUPE_SECONDS = 3 * 24 * 3600
DELIVERY_ID = re.compile(r"^[A-Za-z0-9-]{1,100}$")
IGNORED_EVENTS = {"ping", "installation", "installation_repositories"}
JOB_RESULT_TTL = 7 * 24 * 3600


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _text(status: int, message: str):  # noqa: ANN202 - a Flask response tuple
    return message + "\n", status, {"Content-Type": "text/plain; charset=utf-8"}


def _parse(body: bytes, content_type: str) -> dict[str, Any]:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        raw = body
    elif media_type == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(body.decode("utf-8"), strict_parsing=False)
        except UnicodeDecodeError:
            raise BadRequest(400, "form body is not UTF-8") from None
        if "payload" not in fields:
            raise BadRequest(400, "form body has no payload field")
        raw = fields["payload"][0].encode()
    else:
        raise BadRequest(415, "unsupported content type: send application/json")
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest(400, "body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise BadRequest(400, "payload must be a JSON object")
    return payload


def _enqueuer(settings: Settings, redis: Redis):  # noqa: ANN202
    queue = Queue(settings.codex_queue, connection=redis)

    def enqueue(function: str, delivery: Delivery, **kwargs: Any) -> Enqueued:
        task_id = delivery.id
        queue.enqueue(
            function,
            kwargs={**kwargs, "task_id": task_id, "delivery_id": delivery.id},
            job_id=task_id,
            job_timeout=settings.codex_job_timeout,
            result_ttl=JOB_RESULT_TTL,
            failure_ttl=JOB_RESULT_TTL,
            description=f"{function} {kwargs}",
        )
        log.info("enqueued", task_id=task_id, function=function)
        return Enqueued(task_id=task_id)

    return enqueue


def _claim(redis: Redis, delivery_id: str) -> bytes | None:
    """Mark a delivery as seen; return what an earlier one recorded, or None if it is new."""
    key = f"codexbot:delivery:{delivery_id}"
    if redis.set(key, b"", nx=True, ex=DEDUPE_SECONDS):
        return None
    earlier = redis.get(key)
    return earlier if isinstance(earlier, bytes) else b""


@blueprint.post("/webhook")
def receive_webhook():  # noqa: ANN201
    settings: Settings = current_app.config["SETTINGS"]
    redis: Redis = current_app.extensions["redis"]
    router: Router = current_app.extensions["router"]

    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return _text(413, "payload too large")
    body = request.get_data(cache=False)
    if len(body) > MAX_BODY_BYTES:
        return _text(413, "payload too large")
    if not verify_signature(
        body, request.headers.get("X-Hub-Signature-256"), settings.webhook_secrets()
    ):
        return _text(401, "bad signature")

    event = request.headers.get("X-GitHub-Event", "").strip()
    delivery_id = request.headers.get("X-GitHub-Delivery", "").strip()
    try:
        if not event:
            raise BadRequest(400, "missing X-GitHub-Event header")
        if not DELIVERY_ID.match(delivery_id):
            raise BadRequest(400, "missing or malformed X-GitHub-Delivery header")
        payload = _parse(body, request.headers.get("Content-Type", ""))
    except BadRequest as error:
        return _text(error.status, str(error))

    structlog.contextvars.bind_contextvars(delivery_id=delivery_id)
    delivery = Delivery(id=delivery_id, event=event, payload=payload)
    if event in IGNORED_EVENTS or not router.handles(event):
        log.info("delivery ignored", event_name=event, action=delivery.action)
        return "", 204

    earlier = _claim(redis, delivery_id)
    if earlier is not None:
        log.info("duplicate delivery", event_name=event)
        if earlier:
            return jsonify(task_id=earlier.decode(), duplicate=True), 202
        return "", 204
    try:
        enqueued = router.dispatch(delivery, Context(settings, _enqueuer(settings, redis)))
    except Exception:
        redis.delete(f"codexbot:delivery:{delivery_id}")  # let GitHub's redelivery try again
        raise
    if not enqueued:
        log.info("nothing to do", event_name=event, action=delivery.action)
        return "", 204
    task_id = enqueued[0].task_id
    redis.set(f"codexbot:delivery:{delivery_id}", task_id.encode(), xx=True, keepttl=True)
    return jsonify(task_id=task_id), 202
