"""The webhook receiver: verifies, parses, decides and enqueues; the workers do the work."""

from __future__ import annotations

import structlog
from flask import Flask, request
from redis import Redis
from werkzeug.exceptions import HTTPException

from app import health, webhook
from app.triggers import build_router
from codexbot.settings import Settings, load_settings

log = structlog.get_logger()


def create_app(settings: Settings | None = None, redis: Redis | None = None) -> Flask:
    settings = settings or load_settings()
    flask_app = Flask(__name__)
    flask_app.config["SETTINGS"] = settings
    flask_app.config["MAX_CONTENT_LENGTH"] = webhook.MAX_BODY_BYTES + 1024
    flask_app.extensions["redis"] = redis or Redis.from_url(settings.redis_url)
    flask_app.extensions["router"] = build_router()
    flask_app.register_blueprint(webhook.blueprint)
    flask_app.register_blueprint(health.blueprint)

    @flask_app.before_request
    def _forget_previous_request() -> None:
        structlog.contextvars.clear_contextvars()

    @flask_app.errorhandler(HTTPException)
    def _short_http_error(error: HTTPException):  # noqa: ANN202
        return f"{error.code} {error.name.lower()}\n", error.code, {"Content-Type": "text/plain"}

    @flask_app.errorhandler(Exception)
    def _internal_error(error: Exception):  # noqa: ANN202
        log.exception("unhandled error", path=request.path)
        return "internal error; see the receiver's logs\n", 500, {"Content-Type": "text/plain"}

    return flask_app
