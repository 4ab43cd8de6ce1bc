"""Redis key names shared by the receiver and the workers, in one place."""

from __future__ import annotations

DELIVERY_TTL = 3 * 24 * 3600  # GitHub keeps deliveries, and redelivers on request, for three days


def delivery(delivery_id: str) -> str:
    """Set once per X-GitHub-Delivery; holds the task id it started (empty: nothing to do)."""
    return f"codexbot:delivery:{delivery_id}"


def target(repo: str, number: int) -> str:
    """The newest task for an issue or PR, while one is running."""
    return f"codexbot:target:{repo.lower()}#{number}"


def task(task_id: str) -> str:
    """A task's record: repo, number, kind, state, progress comment, timings."""
    return f"codexbot:task:{task_id}"


def lease(task_id: str) -> str:
    """Held by the attempt running a task (value: its attempt number), renewed while it runs; a
    task started but without a lease lost its worker."""
    return f"codexbot:task:{task_id}:lease"


def steering(task_id: str) -> str:
    """Comments for a running task's agent, read at its next step."""
    return f"codexbot:steer:{task_id}"


def cancel(task_id: str) -> str:
    """Set when a task must stop: holds the reason (stopped by a user, superseded by ...)."""
    return f"codexbot:cancel:{task_id}"


def intake_job_id(delivery_id: str) -> str:
    return f"intake-{delivery_id}"


def tasks_in_state(state: str) -> str:
    """The ids of the tasks now in ``state`` (queued, running, done, ...), for metrics."""
    return f"codexbot:tasks:state:{state}"


def permission(repo: str, user: str) -> str:
    """A user's role on a repository, cached for a minute."""
    return f"codexbot:permission:{repo.lower()}:{user.lower()}"


def review_claim(review_id: int) -> str:
    """Set by the first event of a review, so one review starts one follow-up."""
    return f"codexbot:review:{review_id}"


def ci_claim(repo: str, sha: str) -> str:
    """Set by the first report of a commit's failed CI, so one red commit starts one fix."""
    return f"codexbot:ci:{repo.lower()}:{sha}"


def ci_rounds(repo: str, number: int) -> str:
    """How many times the bot went back to work on a pull request because its CI failed."""
    return f"codexbot:ci-rounds:{repo.lower()}#{number}"


def redelivery_asks(guid: str) -> str:
    """The attempt ids of a delivery (by X-GitHub-Delivery) we asked GitHub to redeliver."""
    return f"codexbot:redeliver:asked:{guid}"


# When the reconciliation last looked at GitHub's deliveries (a Unix time), and the claim of the
# worker that runs the current round (expires after one interval).
REDELIVER_CHECKED = "codexbot:redeliver:checked"
REDELIVER_ROUND = "codexbot:redeliver:round"


ENV_LAST_USED = "codexbot:env:last-used"  # hash: prepared image key -> unix time of last use


def env_build_lock(env_key: str) -> str:
    """Held while one worker prepares an environment image, so others wait for it."""
    return f"codexbot:env:build:{env_key}"


def trees(repo: str) -> str:
    """A sorted set per repository: its complete workspace trees by creation time."""
    return f"codexbot:trees:{repo.lower()}"


def tree_build_lock(repo: str) -> str:
    """Held while one worker builds a repository's tree, so others wait for it."""
    return f"codexbot:trees:build:{repo.lower()}"


def trajectory(task_id: str) -> str:
    """A list: the task's trajectory, one zlib-compressed JSON record per item."""
    return f"codexbot:trajectory:{task_id}"


TRAJECTORIES = "codexbot:trajectories"  # sorted set: task id -> when its trajectory started


def metric(name: str) -> str:
    """A hash per worker-side metric (`codexbot.fleetmetrics`): one field per label set (and,
    for a histogram, per bucket, sum and count)."""
    return f"codexbot:metrics:{name}"


def tries(repo: str, number: int) -> str:
    """The last task on an issue or PR that ran several tries (`/codex fix --use-attempt`)."""
    return f"codexbot:tries:{repo.lower()}#{number}"


def pool(shape: str) -> str:
    """A list per sandbox shape: the ids of its idle, pooled containers (`sandbox.pool`)."""
    return f"codexbot:pool:{shape}"


def pool_claim(container_id: str) -> str:
    """Set once (NX) by whoever takes a pooled container: a task, or the reaper removing it."""
    return f"codexbot:pool:claim:{container_id}"


def pool_filling(shape: str) -> str:
    """Held while one worker starts idle containers of a shape, so two do not overfill it."""
    return f"codexbot:pool:filling:{shape}"
