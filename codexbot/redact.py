"""Scrub known secret values out of any text before it is stored or shown."""

from __future__ import annotations

import base64
from collections.abc import Iterable

MASK = "[REDACTED]"
# Shorter values are too likely to match ordinary text; no real key or token is this short.
MIN_SECRET_LENGTH = 8


def _forms(secret: str) -> set[str]:
    """The value itself and the encodings in which it commonly leaks (git's Basic auth header)."""
    forms = {secret}
    for prefix in ("x-access-token:", ""):
        forms.add(base64.b64encode(f"{prefix}{secret}".encode()).decode())
    for line in secret.splitlines():  # a PEM key leaks line by line as often as whole
        if len(line.strip()) >= MIN_SECRET_LENGTH and "-----" not in line:
            forms.add(line.strip())
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


class Redactor:
    """Replaces every known secret value, in each of its common forms, with a mask.

    >>> Redactor(["hunter2hunter2"])("password=hunter2hunter2")
    'password=[REDACTED]'
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._forms: list[str] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        if not secret:
            return
        known = set(self._forms) | _forms(secret)
        # Longest first, so a value that contains another is masked whole.
        self._forms = sorted(known, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def __bool__(self) -> bool:
        return bool(self._forms)
