"""The code map and references, on real git repositories: the demo repository, this project's
own code (its import edges against the interpreter's own reading of them), and small
JavaScript, TypeScript and Go fixtures."""

from __future__ import annotations

import dis
import functools
import importlib.util
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from workers.checkout import Git
from workers.codemap import (
    CodeIndex,
    build_index,
    cached_index,
    find_references,
    render_map,
)
from workers.coderepos import CodeRepos, Snapshot

ROOT = Path(__file__).resolve().parents[2]
DEMO_REPO = ROOT / "sim" / "demo_repo"


def committed(path: Path) -> tuple[Git, str]:
    """``path`` as a git repository with everything in it committed; its git and commit."""
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t"}
    env |= {"GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin", "HOME": str(path)}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "c", "--no-gpg-sign"]):
        subprocess.run(["git", *args], cwd=path, env=env, check=True, capture_output=True)
    git = Git(path)
    return git, git("rev-parse", "HEAD")


@pytest.fixture
def demo(tmp_path: Path) -> tuple[Git, str]:
    shutil.copytree(DEMO_REPO, tmp_path / "demo", ignore=shutil.ignore_patterns("issue.md"))
    return committed(tmp_path / "demo")


@pytest.fixture(scope="module")
def own_index() -> CodeIndex:
    git = Git(ROOT)
    return build_index(git, git("rev-parse", "HEAD"))


def test_the_demo_map_ranks_the_imported_module_first_with_its_edges(demo) -> None:
    index = build_index(*demo)

    assert index.modules["tests/test_core.py"].edges == ["textstats/__init__.py"]
    assert index.modules["textstats/__init__.py"].edges == ["textstats/core.py"]
    assert index.ranked()[0] == "textstats/core.py"
    shown = render_map(index, 1000)
    assert "textstats/core.py (#1, imported by 1)" in shown
    assert "defines: word_count:4, average_word_length:11" in shown
    assert "imported by: textstats/__init__.py" in shown


def test_references_name_the_definition_and_every_use(demo) -> None:
    found = find_references(build_index(*demo), "word_count")

    definitions = [(r.path, r.line) for r in found if r.definition]
    uses = {(r.path, r.line) for r in found if not r.definition}
    assert definitions == [("textstats/core.py", 4)]
    assert {("textstats/__init__.py", 3), ("tests/test_core.py", 2)} <= uses
    assert ("tests/test_core.py", 17) in uses


# -- this project's own code, against an independent reading of its imports -------------------


def imported_files(code: types.CodeType, package: str) -> set[str]:
    """The project's files a module's bytecode imports (IMPORT_NAME with its level and
    from-list), as the import system finds them: `from a import b` is a.b when that is a
    module, else a."""
    names: set[str] = set()
    consts: list[object] = []
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("LOAD_CONST", "LOAD_SMALL_INT"):
            consts.append(instruction.argval)
        elif instruction.opname == "IMPORT_NAME":
            level, fromlist = consts[-2], consts[-1]
            name = instruction.argval
            if level:
                base = package.rsplit(".", level - 1)[0] if level > 1 else package
                name = f"{base}.{name}" if name else base
            items = [item for item in fromlist or () if item != "*"]
            submodules = {f for f in (project_file(f"{name}.{item}") for item in items) if f}
            names |= submodules
            if len(submodules) < len(items) or not items:
                names.add(project_file(name) or "")
        else:
            consts = consts[-2:] if instruction.opname.startswith("LOAD") else []
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= imported_files(const, package)
    return names - {""}


def project_file(name: str) -> str | None:
    """The file of this project a module name is, as the import system finds it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None
    origin = spec.origin if spec else None
    if not origin or not origin.startswith(str(ROOT) + "/"):
        return None
    path = str(Path(origin).relative_to(ROOT))
    return path if path in tracked_files() else None  # not a virtualenv inside the checkout


@functools.cache
def tracked_files() -> frozenset[str]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return frozenset(listed.stdout.decode().split("\0"))


@pytest.mark.parametrize(
    "path",
    [
        "workers/jobs.py",
        "workers/run.py",
        "workers/plan.py",
        "workers/agent/loop.py",
        "app/webhook.py",
        "app/triggers/commands.py",
        "workers/agent/__init__.py",
    ],
)
def test_import_edges_of_this_project_match_its_bytecode(own_index: CodeIndex, path: str) -> None:
    assert str(ROOT) in sys.path or str(ROOT) in map(str, map(Path, sys.path))
    source = (ROOT / path).read_text()
    package = path[:-3].replace("/", ".").removesuffix(".__init__")
    if not path.endswith("__init__.py"):
        package = package.rpartition(".")[0]
    code = compile(source, path, "exec")
    expected = imported_files(code, package) - {path}

    assert set(own_index.modules[path].edges) == expected
    assert expected  # each of these imports others of the project


def test_the_request_flow_from_webhook_to_pull_request_is_in_the_graph(own_index) -> None:
    importers = own_index.importers()
    assert "workers/jobs.py" in importers["workers/publish.py"]
    assert "app/webhook.py" in importers["app/router.py"]
    found = find_references(own_index, "run_task")
    assert ("workers/jobs.py", "function") in [(r.path, r.definition) for r in found]
    # enqueued by name: a string that names code counts as a use
    assert any(r.path == "workers/tasks.py" for r in found if not r.definition)


def test_the_map_keeps_to_its_budget_and_can_focus(own_index) -> None:
    small = render_map(own_index, 300)
    assert len(small) < 300 * 4 + 600  # one module may pass the budget, never many
    assert "more modules not shown" in small
    focused = render_map(own_index, 4000, "workers/agent")
    listed = [line for line in focused.splitlines() if line and not line.startswith((" ", "("))]
    assert all(line.startswith("workers/agent/") for line in listed[1:])


# -- other languages, unparsable and hostile files ---------------------------------------------

FIXTURES = {
    "web/util.ts": "export interface Options { depth: number }\n"
    "export function helper(o: Options): number { return o.depth }\n",
    "web/main.tsx": 'import { helper } from "./util";\nimport React from "react";\n'
    "export const App = () => <div>{helper({ depth: 1 })}</div>;\n",
    "web/legacy.js": 'const util = require("./lib/index.js");\nclass Legacy {}\n'
    "function run() { return util.helper }\nmodule.exports = { run, Legacy };\n",
    "web/lib/index.js": "export function helper() { return 1 }\n",
    "go.mod": "module example.com/shop\n\ngo 1.22\n",
    "cmd/server/main.go": 'package main\n\nimport (\n\t"fmt"\n\t"example.com/shop/store"\n)\n\n'
    "func main() { fmt.Println(store.Open()) }\n",
    "store/store.go": "package store\n\ntype Store struct{ name string }\n\n"
    "const Version = 2\n\nfunc Open() *Store { return &Store{} }\n\n"
    "func (s *Store) Name() string { return s.name }\n",
    "store/store_test.go": 'package store\n\nimport "testing"\n\n'
    "func TestOpen(t *testing.T) { Open() }\n",
    "broken.py": "def broken(:\n    pass\n",
    "good.py": "import broken\n",
}


@pytest.fixture
def polyglot(tmp_path: Path) -> tuple[Git, str]:
    for name, text in FIXTURES.items():
        (tmp_path / "poly" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "poly" / name).write_text(text)
    hostile = tmp_path / "poly" / "evil\nname `@team`.py"
    hostile.write_text("x = 1\n")
    return committed(tmp_path / "poly")


def test_javascript_typescript_and_go_files_are_parsed_and_linked(polyglot) -> None:
    index = build_index(*polyglot)
    modules = index.modules

    assert modules["web/main.tsx"].edges == ["web/util.ts"]
    assert modules["web/legacy.js"].edges == ["web/lib/index.js"]
    assert modules["cmd/server/main.go"].edges == ["store/store.go"]
    assert modules["store/store_test.go"].edges == []  # its own package
    assert ("Options", "interface", 1) in modules["web/util.ts"].definitions
    assert ("helper", "function", 2) in modules["web/util.ts"].definitions
    assert ("App", "variable", 3) in modules["web/main.tsx"].definitions
    assert {("Legacy", "class", 2), ("run", "function", 3)} <= set(
        modules["web/legacy.js"].definitions
    )
    assert {("Store", "type", 3), ("Version", "const", 5), ("Open", "function", 7)} <= set(
        modules["store/store.go"].definitions
    )
    assert ("Store.Name", "method", 9) in modules["store/store.go"].definitions
    uses = {(r.path, r.line) for r in find_references(index, "Open") if not r.definition}
    assert {("cmd/server/main.go", 8), ("store/store_test.go", 5)} <= uses


def test_an_unparsable_file_is_skipped_and_a_hostile_name_never_shown(polyglot) -> None:
    index = build_index(*polyglot)

    assert "broken.py" not in index.modules
    assert index.skipped["broken.py"].startswith("does not parse")
    assert index.modules["good.py"].edges == []
    assert any(reason == "unusual file name" for reason in index.skipped.values())
    shown = render_map(index, 8000)
    assert "@team" not in shown and "evil" not in shown
    assert "1 file(s) skipped" not in shown and "2 file(s) skipped" in shown


def test_the_index_is_kept_per_commit_and_a_miss_builds_it(demo, tmp_path: Path) -> None:
    git, sha = demo
    cache = tmp_path / "cache"
    first = cached_index(git, sha, cache)
    kept = cache / f"{sha}-v1.json"
    assert kept.is_file()
    kept.write_text(kept.read_text().replace("word_count", "kept_name"))
    assert "kept_name" in cached_index(git, sha, cache).modules["textstats/core.py"].names
    kept.write_text("{not json")
    again = cached_index(git, sha, cache)  # unreadable: built again
    assert again.modules.keys() == first.modules.keys()


def test_related_repositories_are_cited_by_name(demo, polyglot) -> None:
    repos = CodeRepos(
        Snapshot("octo/textstats", demo[0].cwd, demo[1]),
        [Snapshot("octo/shop", polyglot[0].cwd, polyglot[1])],
    )

    shown = repos.references("Open", None)
    assert "octo/shop:cmd/server/main.go:8 func main() { fmt.Println(store.Open()) }" in shown
    assert repos.line_count("octo/shop:store/store.go") == 9
    assert repos.line_count("textstats/core.py") == 16
    assert repos.line_count("octo/nope:store/store.go") is None
    assert repos.search("octo/shop", "func Open", ".", 10) == [
        "octo/shop:store/store.go:7:func Open() *Store { return &Store{} }"
    ]
    assert "read-only" in repos.map("octo/shop", "", 500)
