"""GET /tasks/<id>: a task's trajectory as a page, so anyone can see what the agent did.

The page shows what the trajectory holds, which is already redacted of every secret the bot
knows. It holds code and prompts from the repository, so put the receiver's /tasks/ behind the
same access control as the repositories it serves when they are private.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, render_template

from workers.agent import report

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
    directory = current_app.config["SETTINGS"].codex_data_dir / "trajectories"
    loaded = report.load(directory, task_id)
    if loaded is None:
        abort(404)
    summary, steps = loaded
    page = render_template("tasks/show.html", summary=summary, steps=steps, clip=report.clip)
    response = Response(page, mimetype="text/html")
    response.headers.update(SECURITY_HEADERS)
    return response
