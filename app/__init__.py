"""The webhook receiver: verifies, parses, decides and enqueues; the workers do the work."""

from __future__ import annotations

import structlog
from flask import Flask, Response, request
from redis import Redis
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from app import dashboard, health, metrics, tasks, webhook
from app.triggers import build_router
from codexbot import redisconn
from codexbot.settings import Settings, load_settings

log = structlog.get_logger()


def create_app(settings: Settings | None = None, redis: Redis | None = None) -> Flask:
    settings = settings or load_settings()
    flask_app = Flask(__name__)
    flask_app.config["SETTINGS"] = settings
    flask_app.config["MAX_CONTENT_LENGTH"] = webhook.MAX_BODY_BYTES + 1024
    # GitHub gives up on a delivery after 10 s: a stalled Redis must fail well before that.
    redis = redis or redisconn.connect_receiver(settings.redis_url)
    flask_app.extensions["redis"] = redis
    flask_app.extensions["router"] = build_router()
    flask_app.extensions["intake"] = webhook.Intake(settings, redis)
    flask_app.extensions["metrics"] = metrics.ReceiverMetrics(settings, redis)
    flask_app.register_blueprint(webhook.blueprint)
    flask_app.register_blueprint(health.blueprint)
    flask_app.register_blueprint(metrics.blueprint)
    flask_app.register_blueprint(tasks.blueprint)
    flask_app.register_blueprint(dashboard.blueprint)
    flask_app.wsgi_app = webhook.FastPath(flask_app)  # type: ignore[method-assign]

    @flask_app.before_request
    def _forget_previous_request() -> None:
        structlog.contextvars.clear_contextvars()

    @flask_app.errorhandler(HTTPException)
    def _short_http_error(error: HTTPException) -> Response:
        code = error.code or 500
        return Response(f"{code} {(error.name or 'error').lower()}\n", code, _TEXT)

    @flask_app.errorhandler(RedisError)
    def _redis_unavailable(error: RedisError) -> Response:
        log.error("redis unavailable", path=request.path, error=str(error))
        return Response("503 queue unavailable; redeliver it (codexbot redeliver)\n", 503, _TEXT)

    @flask_app.errorhandler(Exception)
    def _internal_error(error: Exception) -> Response:
        log.exception("unhandled error", path=request.path)
        return Response("internal error; see the receiver's logs\n", 500, _TEXT)

    return flask_app


_TEXT = {"Content-Type": "text/plain; charset=utf-8"}
