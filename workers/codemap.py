"""A repository's code as a graph, for the agent's `map` and `references` tools.

Built on the worker from one commit of the task's checkout (or of a related repository's
mirror), read through git so the agent's edits in the sandbox never change it; kept in the
worker's cache directory under the commit's sha (another host without it builds its own).

The map lists modules with what they define, import and are imported by, most central first
(PageRank over the import graph, after Aider's repository map), cut to a budget of tokens.
`references` lists where a name is defined and used. Everything shown comes from the
repository, so it is capped and shown as data: paths with control characters are not read.
"""

from __future__ import annotations

import json
import os
import posixpath
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from workers.checkout import Git
from workers.codeparse import Unparsable, language_of, parse

log = structlog.get_logger(__name__)

INDEX_VERSION = 1  # part of the cache key: a new format is built anew
MAX_FILES = 4000  # source files indexed; the rest are named as skipped
MAX_FILE_BYTES = 300_000
MAX_TOTAL_BYTES = 40_000_000
MAX_PATH = 300
BUILD_SECONDS = 60.0
CACHE_KEEP = 200  # indexes kept in the cache directory, newest first
SKIPPED_DIRS = {
    "node_modules",
    "vendor",
    "third_party",
    "dist",
    "build",
    "__pycache__",
    ".venv",
    "venv",
    "site-packages",
    ".git",
}
SCRIPT_SUFFIXES = (".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts")
CHARS_PER_TOKEN = 4
LIST_CAP = 12  # names shown per list in the map
REFERENCE_CAP = 60  # uses shown by `references`


@dataclass
class Module:
    path: str
    language: str
    definitions: list[tuple[str, str, int]]  # name, kind, line
    imports: list[str]  # as written
    names: dict[str, list[int]]
    package: str = ""
    edges: list[str] = field(default_factory=list)  # the repository's files it imports


@dataclass
class CodeIndex:
    sha: str
    modules: dict[str, Module]
    skipped: dict[str, str]  # path -> why
    rank: dict[str, float] = field(default_factory=dict)

    def importers(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = defaultdict(list)
        for module in self.modules.values():
            for target in module.edges:
                found[target].append(module.path)
        return found

    def ranked(self) -> list[str]:
        return sorted(self.modules, key=lambda path: (-self.rank.get(path, 0.0), path))

    def to_json(self) -> dict:
        return {
            "version": INDEX_VERSION,
            "sha": self.sha,
            "modules": [module.__dict__ for module in self.modules.values()],
            "skipped": self.skipped,
            "rank": self.rank,
        }

    @classmethod
    def from_json(cls, data: dict) -> CodeIndex:
        modules = {}
        for item in data["modules"]:
            item["definitions"] = [tuple(d) for d in item["definitions"]]
            modules[item["path"]] = Module(**item)
        return cls(data["sha"], modules, data["skipped"], data["rank"])


# -- reading one commit ------------------------------------------------------------------------


def safe_path(path: str) -> bool:
    """A path the tools may show: printable, not too long."""
    return len(path) <= MAX_PATH and path.isprintable() and "`" not in path


def _indexed(path: str) -> bool:
    parts = path.split("/")
    if any(part in SKIPPED_DIRS for part in parts[:-1]) or path.endswith(".min.js"):
        return False
    return language_of(path) is not None or parts[-1] == "go.mod"


def tree_files(git: Git, sha: str) -> list[tuple[str, str, int]]:
    """(path, blob id, size) of every regular file at ``sha``."""
    listing = git.raw("ls-tree", "-r", "-z", "--long", "--full-tree", sha)
    files = []
    for entry in listing.split(b"\0"):
        if not entry or b"\t" not in entry:
            continue
        meta, raw_path = entry.split(b"\t", 1)
        mode, kind, oid, size = meta.split()
        if kind != b"blob" or mode not in (b"100644", b"100755") or not size.isdigit():
            continue
        files.append((raw_path.decode("utf-8", errors="replace"), oid.decode(), int(size)))
    return files


def read_blobs(git: Git, oids: list[str]) -> Iterator[bytes]:
    """The blobs' contents, in order (one `git cat-file --batch` for all of them)."""
    if not oids:
        return
    out = git.raw("cat-file", "--batch", input="".join(f"{oid}\n" for oid in oids).encode())
    at = 0
    for _ in oids:
        end = out.index(b"\n", at)
        header = out[at:end].split()
        if len(header) < 3 or header[1] == b"missing":
            at = end + 1
            yield b""
            continue
        size = int(header[2])
        yield out[end + 1 : end + 1 + size]
        at = end + 1 + size + 1


def build_index(git: Git, sha: str) -> CodeIndex:
    """The index of ``sha``: every file in bounds parsed; one that does not parse is skipped."""
    started = time.monotonic()
    skipped: dict[str, str] = {}
    chosen: list[tuple[str, str]] = []
    total = 0
    for path, oid, size in tree_files(git, sha):
        if not _indexed(path):
            continue
        if not safe_path(path):
            skipped[repr(path)[1:-1][:MAX_PATH]] = "unusual file name"
        elif size > MAX_FILE_BYTES:
            skipped[path] = f"larger than {MAX_FILE_BYTES} bytes"
        elif len(chosen) >= MAX_FILES or total + size > MAX_TOTAL_BYTES:
            skipped[path] = "past the index's limit on files"
        else:
            chosen.append((path, oid))
            total += size
    modules: dict[str, Module] = {}
    go_mods: dict[str, str] = {}
    for (path, _), data in zip(chosen, read_blobs(git, [oid for _, oid in chosen]), strict=True):
        if path.split("/")[-1] == "go.mod":
            go_mods[posixpath.dirname(path)] = go_module_path(data)
            continue
        if time.monotonic() - started > BUILD_SECONDS:
            skipped[path] = "past the index's time limit"
            continue
        try:
            parsed = parse(path, data)
        except (Unparsable, RecursionError) as error:
            skipped[path] = f"does not parse: {str(error)[:80]}"
            continue
        modules[path] = Module(
            path,
            language_of(path) or "",
            [(d.name, d.kind, d.line) for d in parsed.definitions],
            parsed.imports,
            parsed.names,
            parsed.package,
        )
    index = CodeIndex(sha, modules, skipped)
    link(index, go_mods)
    index.rank = pagerank(index)
    return index


def go_module_path(data: bytes) -> str:
    for line in data.decode("utf-8", errors="replace").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "module":
            return words[1].strip('"')
    return ""


# -- the import graph --------------------------------------------------------------------------


def python_names(paths: list[str]) -> dict[str, str]:
    """Dotted module name -> file, for each Python file (`src/` layouts under both names)."""
    names: dict[str, str] = {}
    for path in sorted(paths):
        if not path.endswith(".py"):
            continue
        parts = path[:-3].split("/")
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not parts:
            continue
        names.setdefault(".".join(parts), path)
        if parts[0] in ("src", "lib") and len(parts) > 1:
            names.setdefault(".".join(parts[1:]), path)
    return names


def resolve_python(path: str, spec: str, names: dict[str, str]) -> str | None:
    if spec.startswith("."):
        level = len(spec) - len(spec.lstrip("."))
        package = path[:-3].split("/")
        package = package[:-1]  # a module's package; `__init__`'s is its own directory
        if level > 1:
            package = package[: len(package) - (level - 1)] if level - 1 <= len(package) else []
        rest = spec[level:]
        spec = ".".join([*package, *([rest] if rest else [])])
    parts = spec.split(".")
    while parts:  # `from a import b` names module a.b, or a name in a
        found = names.get(".".join(parts))
        if found is not None:
            return found
        parts.pop()
    return None


def resolve_script(path: str, spec: str, files: set[str]) -> str | None:
    if not spec.startswith("."):
        return None  # a package from the registry
    base = posixpath.normpath(posixpath.join(posixpath.dirname(path), spec))
    stem = base
    for suffix in (".js", ".jsx", ".mjs", ".cjs"):
        if base.endswith(suffix):  # TypeScript imports `./x.js` for `x.ts`
            stem = base[: -len(suffix)]
    candidates = [base, *(stem + s for s in SCRIPT_SUFFIXES)]
    candidates += [f"{base}/index{s}" for s in SCRIPT_SUFFIXES]
    return next((c for c in candidates if c in files), None)


def resolve_go(spec: str, go_mods: dict[str, str], directories: dict[str, list[str]]) -> list[str]:
    for root, module in go_mods.items():
        if module and (spec == module or spec.startswith(module + "/")):
            directory = posixpath.normpath(posixpath.join(root, spec[len(module) :].lstrip("/")))
            return directories.get("" if directory == "." else directory, [])
    return []


def link(index: CodeIndex, go_mods: dict[str, str]) -> None:
    """Each module's edges: the repository's files its imports name."""
    paths = list(index.modules)
    names, files = python_names(paths), set(paths)
    go_dirs: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        if path.endswith(".go") and not path.endswith("_test.go"):
            go_dirs[posixpath.dirname(path)].append(path)
    for module in index.modules.values():
        found: list[str] = []
        for spec in module.imports:
            if module.language == "python":
                targets = [resolve_python(module.path, spec, names)]
            elif module.language == "go":
                targets = list(resolve_go(spec, go_mods, go_dirs))
            else:
                targets = [resolve_script(module.path, spec, files)]
            found += [t for t in targets if t and t != module.path and t not in found]
        module.edges = found


def pagerank(index: CodeIndex, damping: float = 0.85, rounds: int = 40) -> dict[str, float]:
    """How central each module is: imported by central modules ranks high."""
    nodes = list(index.modules)
    if not nodes:
        return {}
    share = 1.0 / len(nodes)
    rank = dict.fromkeys(nodes, share)
    for _ in range(rounds):
        dangling = sum(rank[n] for n in nodes if not index.modules[n].edges)
        new = dict.fromkeys(nodes, (1 - damping) * share + damping * dangling * share)
        for node in nodes:
            edges = index.modules[node].edges
            for target in edges:
                new[target] += damping * rank[node] / len(edges)
        rank = new
    return {node: round(value, 6) for node, value in rank.items()}


# -- the cache ---------------------------------------------------------------------------------


def cached_index(git: Git, sha: str, cache_dir: Path | None) -> CodeIndex:
    """The index of ``sha`` from this worker's cache, built (and kept) on a miss."""
    path = cache_dir / f"{sha}-v{INDEX_VERSION}.json" if cache_dir else None
    if path is not None and path.is_file():
        try:
            return CodeIndex.from_json(json.loads(path.read_bytes()))
        except (ValueError, KeyError, TypeError):
            log.warning("code index unreadable; built again", sha=sha)
    index = build_index(git, sha)
    if path is not None and cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps(index.to_json()))
        partial.replace(path)
        prune(cache_dir)
    return index


def prune(cache_dir: Path) -> None:
    kept = sorted(cache_dir.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in kept[CACHE_KEEP:]:
        old.unlink(missing_ok=True)


# -- what the tools show -----------------------------------------------------------------------


def _listed(items: list[str], cap: int = LIST_CAP) -> str:
    shown = ", ".join(items[:cap])
    return shown + (f", and {len(items) - cap} more" if len(items) > cap else "")


def _public(name: str, kind: str) -> bool:
    """What the map lists of a module: its top-level names, not methods or private ones."""
    return kind != "method" and not name.startswith("_")


def render_map(index: CodeIndex, budget_tokens: int, under: str = "") -> str:
    """The modules (those under ``under``), most central first, until the budget is spent."""
    importers = index.importers()
    prefix = under.strip("/")
    chosen = [p for p in index.ranked() if not prefix or p == prefix or p.startswith(prefix + "/")]
    budget = budget_tokens * CHARS_PER_TOKEN
    blocks: list[str] = []
    used = 0
    for position, path in enumerate(chosen, 1):
        module = index.modules[path]
        lines = [f"{path} (#{position}, imported by {len(importers.get(path, []))})"]
        shown = [f"{n}:{line}" for n, kind, line in module.definitions if _public(n, kind)]
        if shown:
            lines.append("  defines: " + _listed(shown))
        if module.edges:
            lines.append("  imports: " + _listed(module.edges))
        if importers.get(path):
            lines.append("  imported by: " + _listed(sorted(importers[path])))
        block = "\n".join(lines)
        if blocks and used + len(block) > budget:
            blocks.append(f"({len(chosen) - len(blocks)} more modules not shown: give `path`.)")
            break
        blocks.append(block)
        used += len(block) + 1
    header = f"{len(chosen)} module(s) at commit {index.sha[:12]}, most central first."
    if index.skipped:
        header += f" {len(index.skipped)} file(s) skipped (unparsable or past the limits)."
    return header + "\n\n" + ("\n".join(blocks) if blocks else "(no source files found)")


@dataclass(frozen=True)
class Reference:
    path: str
    line: int
    definition: str = ""  # the kind, for a definition


def find_references(index: CodeIndex, symbol: str) -> list[Reference]:
    """Definitions first (most central module first), then uses."""
    name = symbol.strip().split(".")[-1]
    definitions, uses = [], []
    for path in index.ranked():
        module = index.modules[path]
        defined_at = set()
        for defined, kind, line in module.definitions:
            if defined == symbol or defined.split(".")[-1] == name:
                definitions.append(Reference(path, line, kind))
                defined_at.add(line)
        uses += [
            Reference(path, line) for line in module.names.get(name, []) if line not in defined_at
        ]
    return definitions + uses


def render_references(
    references: list[Reference], symbol: str, source_line: Callable[[Reference], str]
) -> str:
    definitions = [r for r in references if r.definition]
    uses = [r for r in references if not r.definition]
    lines = [f"`{symbol}`: {len(definitions)} definition(s), {len(uses)} use(s)."]
    if definitions:
        lines.append("Definitions:")
        lines += [
            f"  {r.path}:{r.line} ({r.definition}) {source_line(r)}" for r in definitions[:20]
        ]
    if uses:
        lines.append("Uses:")
        lines += [f"  {r.path}:{r.line} {source_line(r)}" for r in uses[:REFERENCE_CAP]]
        if len(uses) > REFERENCE_CAP:
            lines.append(f"  ({len(uses) - REFERENCE_CAP} more uses not shown)")
    return "\n".join(lines)
