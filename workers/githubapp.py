"""The App itself, as GitHub knows it: its JWT, installation tokens, its webhook deliveries.

app = GitHubApp.from_settings(settings)
token = app.installation_token(installation_id)   # cached until 5 minutes before expiry
repository = app.repository("octo/widgets", token)
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from github import Auth, Consts, GithubException, GithubIntegration
from github.HookDelivery import HookDeliverySummary
from github.PaginatedList import PaginatedList

from codexbot.fleetmetrics import APP_ACCOUNT
from codexbot.settings import Settings
from workers.github import CLIENT_OPTIONS, Meter, Repository, explain, metered

TOKEN_PERMISSIONS = {"contents": "write", "issues": "write", "pull_requests": "write"}
# Check runs, and the CI logs a fix of red CI reads. An installation whose owner has not yet
# accepted them (an App created before they were added) gets a token without them.
LATER_PERMISSIONS = {"checks": "write", "actions": "read"}


@dataclass(frozen=True)
class HookDelivery:
    """One attempt to deliver a webhook, as GitHub recorded it (``GET /app/hook/deliveries``).

    ``guid`` is the X-GitHub-Delivery id, shared by an event's first delivery and its
    redeliveries; ``id`` names this one attempt.
    """

    id: int
    guid: str
    delivered_at: datetime
    redelivery: bool
    status: str
    status_code: int
    event: str
    action: str | None

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status_code < 300


@functools.cache
def app_key(private_key: str) -> Any:
    """The App's private key, parsed once per process: its consistency check alone takes tens of
    milliseconds, so the task worker runs it before it forks a process per task."""
    return serialization.load_pem_private_key(private_key.encode(), password=None)


class GitHubApp:
    """The App itself: signs JWTs with its private key and mints installation tokens.

    Tokens are cached in this process's memory until five minutes before they expire.
    """

    TOKEN_MARGIN = timedelta(minutes=5)

    def __init__(
        self, *, app_id: int, private_key: str, api_url: str, meter: Meter | None = None
    ) -> None:
        key = app_key(private_key)

        def sign(payload: dict) -> str:
            return jwt.encode(payload, key, algorithm=Consts.DEFAULT_JWT_ALGORITHM)

        self._integration = GithubIntegration(
            auth=Auth.AppAuth(app_id, sign_func=sign), base_url=api_url, **CLIENT_OPTIONS
        )
        self.api_url = api_url
        self.meter = meter  # counts every answer, the App's and its repositories'
        self._tokens: dict[int, tuple[str, datetime]] = {}
        self._login: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, meter: Meter | None = None) -> GitHubApp:
        return cls(
            app_id=settings.github_app_id,
            private_key=settings.private_key_pem(),
            api_url=settings.github_api_url,
            meter=meter,
        )

    def _metered(self) -> AbstractContextManager[None]:
        return metered(self.meter, APP_ACCOUNT, self._integration.requester)

    def installation_token(self, installation_id: int) -> str:
        cached = self._tokens.get(installation_id)
        if cached and cached[1] - self.TOKEN_MARGIN > datetime.now(UTC):
            return cached[0]
        try:
            try:
                with self._metered():
                    grant = self._integration.get_access_token(
                        installation_id, {**TOKEN_PERMISSIONS, **LATER_PERMISSIONS}
                    )
            except GithubException as error:
                if error.status != 422:
                    raise
                with self._metered():
                    grant = self._integration.get_access_token(installation_id, TOKEN_PERMISSIONS)
        except GithubException as error:
            raise explain(error, f"minting a token for installation {installation_id}") from None
        expires = grant.expires_at or datetime.now(UTC) + timedelta(minutes=30)
        self._tokens[installation_id] = (grant.token, expires.astimezone(UTC))
        return grant.token

    def check(self) -> tuple[str, list[str]]:
        """What GitHub says of the App's JWT: its page, and the accounts it is installed on.

        Raises GitHubError when GitHub refuses the JWT (a key that is not this App's).
        """
        try:
            with self._metered():
                app = self._integration.get_app()
                accounts = [i.account.login for i in self._integration.get_installations()]
        except GithubException as error:
            raise explain(error, "GET /app with the App's JWT") from None
        return app.html_url, accounts

    def login(self) -> str:
        """The App's bot account, as it appears on comments and pull requests."""
        if self._login is None:
            try:
                with self._metered():
                    self._login = f"{self._integration.get_app().slug}[bot]"
            except GithubException as error:
                raise explain(error, "reading the App") from None
        return self._login

    def installation_of(self, full_name: str) -> int | None:
        """The installation of the App on a repository, None when it is not installed there."""
        owner, _, name = full_name.partition("/")
        try:
            return int(self._integration.get_repo_installation(owner, name).id)
        except GithubException as error:
            if error.status == 404:
                return None
            raise explain(error, f"reading the App's installation on {full_name}") from None

    def repository(self, full_name: str, token: str) -> Repository:
        return Repository(full_name, token=token, api_url=self.api_url, meter=self.meter)

    def hook_deliveries(self) -> Iterator[HookDelivery]:
        """The App's webhook deliveries, newest first, fetched page by page as they are read."""
        pages = PaginatedList(
            HookDeliverySummary,
            self._integration.requester,
            "/app/hook/deliveries",
            {"per_page": 100},
        )
        try:
            for item in pages:
                yield HookDelivery(
                    id=item.id or 0,
                    guid=item.guid or "",
                    delivered_at=(item.delivered_at or datetime.now(UTC)).astimezone(UTC),
                    redelivery=bool(item.redelivery),
                    status=item.status or "",
                    status_code=item.status_code or 0,
                    event=item.event or "",
                    action=item.action,
                )
        except GithubException as error:
            raise explain(error, "listing the App's webhook deliveries") from None

    def redeliver(self, delivery_id: int) -> None:
        """Ask GitHub to send a delivery again (same guid and payload); it answers at once."""
        try:
            with self._metered():
                self._integration.requester.requestJsonAndCheck(
                    "POST", f"/app/hook/deliveries/{delivery_id}/attempts"
                )
        except GithubException as error:
            raise explain(error, f"asking GitHub to redeliver {delivery_id}") from None
