"""Which related repositories a task reads: `--repo` and `repos:`, each checked. Table tests."""

from __future__ import annotations

import pytest

from codexbot.commands import repo_options
from workers import repoconfig
from workers.coderepos import readable_related, wanted_repositories


@pytest.mark.parametrize(
    ("argument", "names", "rest"),
    [
        ("--repo a/b how?", ("a/b",), "how?"),
        ("--repo=a/b --repo c/d.e  how?", ("a/b", "c/d.e"), "how?"),
        ("how does --repo a/b work?", (), "how does --repo a/b work?"),  # only leading options
        ("--repo ../etc how?", (), "--repo ../etc how?"),
        ("--repo a/b", ("a/b",), ""),
    ],
)
def test_repo_options_lead_the_question(argument, names, rest) -> None:
    assert repo_options(argument) == (names, rest)


def test_wanted_repositories_are_unique_not_the_own_and_capped() -> None:
    question = "--repo o/a --repo O/A --repo o/own why?"
    configured = ["o/b", "o/a", "o/c", "o/d", "o/e", "o/f"]
    assert wanted_repositories(question, configured, "o/own") == ["o/a", "o/b", "o/c", "o/d", "o/e"]


def test_only_repositories_of_the_installation_the_asker_may_read_are_read() -> None:
    installations = {"o/a": 1, "o/b": 1, "o/c": 2}
    roles = {"o/a": "read", "o/b": "none", "o/c": "admin"}
    allowed, refused = readable_related(
        ["o/a", "o/b", "o/c", "o/gone"],
        installation_id=1,
        asker="alice",
        installation_of=installations.get,
        role_of=lambda name, user: roles[name],
    )
    assert allowed == ["o/a"]
    assert refused == [
        "o/b: @alice has no read access",
        "o/c: the App is not installed there for this installation",
        "o/gone: the App is not installed there for this installation",
    ]


@pytest.mark.parametrize(
    ("text", "repos"),
    [("repos: [acme/api, acme/shared.js]\n", ("acme/api", "acme/shared.js")), ("", ())],
)
def test_repos_in_the_config(text, repos) -> None:
    assert repoconfig.parse(text).repos == repos


@pytest.mark.parametrize(
    "text", ["repos: acme\n", 'repos: ["../x"]\n', "repos: [a/b, c/d, e/f, g/h, i/j, k/l]\n"]
)
def test_bad_repos_are_named(text) -> None:
    with pytest.raises(repoconfig.RepoConfigError, match="repos must be a list of at most 5"):
        repoconfig.parse(text)
