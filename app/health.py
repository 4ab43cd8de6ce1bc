"""GET /healthz: the receiver is up and can reach Redis."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from redis import Redis
from redis.exceptions import RedisError

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def report_health() -> tuple[Response, int]:
    redis: Redis = current_app.extensions["redis"]
    try:
        redis.ping()
    except RedisError as error:
        return jsonify(status="unhealthy", redis=str(error)), 503
    return jsonify(status="ok", redis="ok"), 200
