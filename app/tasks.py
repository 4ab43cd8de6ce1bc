"""GET /tasks/<id>: a task's trajectory as a page, so anyone can see what the agent did.

The trajectory is read from Redis, where the worker that ran the task kept it: any receiver
shows any task, whichever host ran it.

The page shows what the trajectory holds, which is already redacted of every secret the bot
knows. It holds code and prompts from the repository, so put the receiver's /tasks/ behind the
same access control as the repositories it serves when they are private.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, render_template

from workers.agent import report
from workers.trajectories import RedisTrajectories

blueprint = Blueprint("tasks", __name__, template_folder="templates")

# The page runs no script and loads nothing: a hostile string in a trajectory can do nothing.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@blueprint.get("/tasks/<task_id>")
def show_task_trajectory(task_id: str) -> Response:
    settings = current_app.config["SETTINGS"]
    store = RedisTrajectories(current_app.extensions["redis"], settings.codex_trajectory_ttl)
    records = report.load(store, task_id)
    if not records:
        abort(404)
    summary, steps = report.summarize(task_id, records), report.steps_of(records)
    page = render_template("tasks/show.html", summary=summary, steps=steps, clip=report.clip)
    response = Response(page, mimetype="text/html")
    response.headers.update(SECURITY_HEADERS)
    return response
