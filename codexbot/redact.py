"""Scrub known secret values out of any text before it is stored or shown.

A secret leaks in whatever form a one-line script gives it: as is, base64 (standard or URL-safe,
padded or not, or inside a longer base64 text), hex, reversed, URL-encoded. `secret_forms` lists
those forms; `Redactor` masks them all and `Redactor.found` tells which kinds of form a text
holds, never which value.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import TypeVar, cast
from urllib.parse import quote, quote_plus

MASK = "[REDACTED]"
# Shorter values are too likely to match ordinary text; no real key or token is this short.
MIN_SECRET_LENGTH = 8
T = TypeVar("T")


def _base64_forms(data: bytes) -> dict[str, str]:
    """``data`` in base64, standard and URL-safe, padded and not, and inside a longer text.

    Inside a longer base64 text, ``data`` starts at one of three byte offsets modulo 3; for each,
    the characters that depend on ``data`` alone are the same whatever surrounds it.
    """
    forms: dict[str, str] = {}
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode()
        start = -(-8 * offset // 6)  # the first character holding no bit of the prefix
        end = 8 * (offset + len(data)) // 6  # the last character holding no bit after the end
        if offset == 0:
            forms[encoded] = forms[encoded.rstrip("=")] = "base64"
        forms[encoded[start:end]] = "base64"
    for form in list(forms):
        forms.setdefault(form.translate(_URL_SAFE), "base64")
    return forms


_URL_SAFE = str.maketrans("+/", "-_")


def secret_forms(secret: str) -> dict[str, str]:
    """Every form of ``secret`` to look for, each with the name of its kind ("base64", "hex").

    >>> sorted(set(secret_forms("hunter2hunter2").values()))
    ['as is', 'base64', 'hex', 'reversed']
    """
    data = secret.encode()
    forms: dict[str, str] = {secret: "as is"}
    for line in secret.splitlines():  # a PEM key leaks line by line as often as whole
        if len(line.strip()) >= MIN_SECRET_LENGTH and "-----" not in line:
            forms.setdefault(line.strip(), "as is")
    candidates = {
        secret[::-1]: "reversed",
        data.hex(): "hex",
        data.hex().upper(): "hex",
        quote(secret, safe=""): "URL-encoded",
        quote(secret): "URL-encoded",
        quote_plus(secret): "URL-encoded",
        # git's Basic auth header carries a token this way
        base64.b64encode(b"x-access-token:" + data).decode(): "base64",
        **_base64_forms(data),
    }
    for form, kind in candidates.items():
        forms.setdefault(form, kind)
    return {form: kind for form, kind in forms.items() if len(form) >= MIN_SECRET_LENGTH}


class Redactor:
    """Replaces every known secret value, in each of its common forms, with a mask.

    >>> Redactor(["hunter2hunter2"])("password=hunter2hunter2, 2retnuh2retnuh")
    'password=[REDACTED], [REDACTED]'
    """

    def __init__(self, secrets: Iterable[str | None] = (), *, mask: str = MASK) -> None:
        self._mask = mask
        self._kinds: dict[str, str] = {}
        self._forms: list[str] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        if not secret:
            return
        for form, kind in secret_forms(secret).items():
            self._kinds.setdefault(form, kind)
        # Longest first, so a value that contains another is masked whole.
        self._forms = sorted(self._kinds, key=len, reverse=True)

    def forms(self) -> list[str]:
        """Every form searched for, longest first (for a search outside Python, like grep)."""
        return list(self._forms)

    def __call__(self, text: str) -> str:
        # One `in` per form: a fast substring search in C, faster here than one big regex.
        for form in self._forms:
            if form in text:
                text = text.replace(form, self._mask)
        return text

    def within(self, value: T) -> T:
        """A JSON-like value (dicts, lists, strings) with every string in it redacted."""
        if isinstance(value, str):
            return cast(T, self(value))
        if isinstance(value, dict):
            return cast(T, {key: self.within(item) for key, item in value.items()})
        if isinstance(value, list | tuple):
            return cast(T, [self.within(item) for item in value])
        return value

    def found(self, data: str | bytes) -> list[str]:
        """The kinds of form ("as is", "base64", ...) in which a known secret is in ``data``."""
        text = data.decode("utf-8", errors="surrogateescape") if isinstance(data, bytes) else data
        return sorted({self._kinds[form] for form in self._forms if form in text})

    def __bool__(self) -> bool:
        return bool(self._forms)
