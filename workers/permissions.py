"""Who may ask: a user's role on a repository, from GitHub, cached in Redis for a minute."""

from __future__ import annotations

from redis import Redis

from codexbot import keys
from workers.github import Repository

WRITE_ROLES = frozenset({"admin", "maintain", "write"})
PERMISSION_TTL = 60


def cached_role(redis: Redis, repository: Repository, user: str) -> str:
    key = keys.permission(repository.full_name, user)
    cached = redis.get(key)
    if isinstance(cached, bytes):
        return cached.decode()
    role = repository.permission(user)
    redis.set(key, role, ex=PERMISSION_TTL)
    return role
