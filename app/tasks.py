"""GET /tasks: the recent tasks; GET /tasks/<id>: a task's trajectory as a page, so anyone
allowed (``app.dashboard``) can see what the agent did.

The trajectory is read from Redis, where the worker that ran the task kept it: any receiver
shows any task, whichever host ran it.

The page shows what the trajectory holds, which is already redacted of every secret the bot
knows. It holds code and prompts from the repository, so put the receiver's /tasks/ behind the
same access control as the repositories it serves when they are private
(``CODEX_DASHBOARD_TOKEN``).
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, render_template

from app import dashboard
from workers import tasks
from workers.agent import report
from workers.trajectories import RedisTrajectories

blueprint = Blueprint("tasks", __name__, template_folder="templates")
blueprint.before_request(dashboard.require_token)
LIST_LIMIT = 100

# The page runs no script and loads nothing: a hostile string in a trajectory can do nothing.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _store() -> RedisTrajectories:
    settings = current_app.config["SETTINGS"]
    return RedisTrajectories(current_app.extensions["redis"], settings.codex_trajectory_ttl)


@blueprint.get("/tasks")
def list_recent_tasks() -> Response:
    rows = report.recent_tasks(current_app.extensions["redis"], _store(), LIST_LIMIT)
    return _page(render_template("tasks/list.html", rows=rows, utc=report.utc_time))


@blueprint.get("/tasks/<task_id>")
def show_task_trajectory(task_id: str) -> Response:
    records = report.load(_store(), task_id)
    record = tasks.load(current_app.extensions["redis"], task_id)
    if not records and record is None:
        abort(404)
    summary, steps = report.summarize(task_id, records), report.steps_of(records)
    if record is not None:  # a task not started yet has a record and no trajectory
        report.with_record(summary, record)
    return _page(render_template("tasks/show.html", summary=summary, steps=steps, clip=report.clip))


def _page(page: str) -> Response:
    response = Response(page, mimetype="text/html")
    response.headers.update(SECURITY_HEADERS)
    return response
