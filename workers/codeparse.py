"""What one source file defines, imports and names: Python through its `ast`, JavaScript,
TypeScript and Go through tree-sitter grammars. Pure: bytes in, a `Parsed` out.

The file is the repository's, so hostile: a file that does not parse raises `Unparsable` (the
index skips it), and every name kept is capped in length.
"""

from __future__ import annotations

import ast
import functools
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

MAX_NAME = 80  # longer identifiers are not kept (minified code, generated tables)
MAX_DEPTH = 400  # tree-sitter nodes deeper than this are not walked
# A string that names code (`"workers.jobs.run_task"`, `"pkg.cli:main"`, `"DATABASE_URL"`): its
# parts count as uses, so `references` finds what is enqueued, registered or read by name.
NAMING_STRING = re.compile(r"[A-Za-z_]\w*(?:[.:][A-Za-z_]\w*)*")

LANGUAGES = {
    ".py": "python",
    ".js": "javascript",
    ".jsx": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
}


class Unparsable(Exception):
    """The file is not valid source of its language (or too deep to walk)."""


@dataclass(frozen=True)
class Definition:
    name: str
    kind: str  # function, class, method, variable, type, interface, enum, constant
    line: int


@dataclass
class Parsed:
    definitions: list[Definition] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)  # as written: `a.b`, `.x`, `./y`, `fmt`
    names: dict[str, list[int]] = field(default_factory=dict)  # every identifier -> its lines
    package: str = ""  # Go: the package clause

    def use(self, name: str, line: int) -> None:
        if name and len(name) <= MAX_NAME:
            lines = self.names.setdefault(name, [])
            if not lines or lines[-1] != line:
                lines.append(line)

    def mention(self, text: str, line: int) -> None:
        if len(text) <= 200 and NAMING_STRING.fullmatch(text):
            for part in re.split("[.:]", text):
                self.use(part, line)

    def define(self, name: str, kind: str, line: int) -> None:
        if name and len(name) <= MAX_NAME:
            self.definitions.append(Definition(name, kind, line))


def language_of(path: str) -> str | None:
    return LANGUAGES.get(posixpath.splitext(path)[1].lower())


def parse(path: str, source: bytes) -> Parsed:
    language = language_of(path)
    if language == "python":
        return parse_python(source)
    if language in ("javascript", "typescript", "tsx"):
        return parse_script(source, language)
    if language == "go":
        return parse_go(source)
    raise Unparsable(f"no parser for {path}")


# -- Python ------------------------------------------------------------------------------------


def parse_python(source: bytes) -> Parsed:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        raise Unparsable(str(error)) from None
    parsed = Parsed()
    for statement in tree.body:
        _python_definition(parsed, statement)
    try:
        walked = list(ast.walk(tree))
    except RecursionError:
        raise Unparsable("too deeply nested") from None
    for node in walked:
        if isinstance(node, ast.Import):
            parsed.imports += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            parsed.imports += [_join_python(base, alias.name) for alias in node.names]
        _python_names(parsed, node)
    return parsed


def _join_python(base: str, name: str) -> str:
    """`from a import b` is module `a.b` when there is one; the index falls back to `a`."""
    if name == "*":
        return base
    return f"{base}{name}" if base.endswith(".") else f"{base}.{name}"


def _python_definition(parsed: Parsed, node: ast.stmt) -> None:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        parsed.define(node.name, "function", node.lineno)
    elif isinstance(node, ast.ClassDef):
        parsed.define(node.name, "class", node.lineno)
        for item in node.body:
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                parsed.define(f"{node.name}.{item.name}", "method", item.lineno)
    elif isinstance(node, ast.Assign | ast.AnnAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            if isinstance(target, ast.Name):
                kind = "constant" if target.id.isupper() else "variable"
                parsed.define(target.id, kind, node.lineno)


def _python_names(parsed: Parsed, node: ast.AST) -> None:
    line = getattr(node, "lineno", 0)
    if isinstance(node, ast.Name):
        parsed.use(node.id, line)
    elif isinstance(node, ast.Attribute):
        parsed.use(node.attr, getattr(node, "end_lineno", line) or line)
    elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        parsed.use(node.name, line)
    elif isinstance(node, ast.alias):
        parsed.use((node.asname or node.name).split(".")[-1], line)
        if node.asname:
            parsed.use(node.name.split(".")[-1], line)
    elif isinstance(node, ast.keyword) and node.arg:
        parsed.use(node.arg, line)
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        parsed.mention(node.value, line)


# -- tree-sitter -------------------------------------------------------------------------------


@functools.cache
def _parser(language: str) -> Any:
    import tree_sitter  # imported here: only a repository with such files pays for it

    if language == "javascript":
        import tree_sitter_javascript as grammar

        capsule = grammar.language()
    elif language in ("typescript", "tsx"):
        import tree_sitter_typescript as grammar_ts

        capsule = (
            grammar_ts.language_tsx() if language == "tsx" else grammar_ts.language_typescript()
        )
    else:
        import tree_sitter_go as grammar_go

        capsule = grammar_go.language()
    return tree_sitter.Parser(tree_sitter.Language(capsule))


def _tree(source: bytes, language: str) -> Any:
    try:
        return _parser(language).parse(source).root_node
    except (ValueError, MemoryError) as error:
        raise Unparsable(str(error)) from None


def _walk(root: Any) -> Iterator[Any]:
    stack = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise Unparsable("too deeply nested")
        yield node
        stack.extend((child, depth + 1) for child in reversed(node.children))


def _text(node: Any) -> str:
    return node.text.decode("utf-8", errors="replace") if node is not None else ""


def _line(node: Any) -> int:
    return int(node.start_point[0]) + 1


def _string(node: Any) -> str:
    return _text(node).strip("'\"`")


SCRIPT_NAMES = {
    "identifier",
    "property_identifier",
    "shorthand_property_identifier",
    "shorthand_property_identifier_pattern",
    "type_identifier",
}
SCRIPT_DEFINITIONS = {
    "function_declaration": "function",
    "generator_function_declaration": "function",
    "class_declaration": "class",
    "abstract_class_declaration": "class",
    "interface_declaration": "interface",
    "type_alias_declaration": "type",
    "enum_declaration": "enum",
}


def parse_script(source: bytes, language: str) -> Parsed:
    root = _tree(source, language)
    parsed = Parsed()
    for node in root.children:
        _script_definition(parsed, node.child_by_field_name("declaration") or node)
    for node in _walk(root):
        kind = node.type
        if kind in SCRIPT_NAMES:
            parsed.use(_text(node), _line(node))
        elif kind == "string_fragment":
            parsed.mention(_text(node), _line(node))
        elif kind in ("import_statement", "export_statement"):
            source_node = node.child_by_field_name("source")
            if source_node is not None:
                parsed.imports.append(_string(source_node))
        elif kind == "call_expression":
            function, arguments = (
                node.child_by_field_name("function"),
                node.child_by_field_name("arguments"),
            )
            if _text(function) in ("require", "import") and arguments is not None:
                strings = [c for c in arguments.named_children if c.type == "string"]
                if strings:
                    parsed.imports.append(_string(strings[0]))
    return parsed


def _script_definition(parsed: Parsed, node: Any) -> None:
    if node.type in SCRIPT_DEFINITIONS:
        name = node.child_by_field_name("name")
        parsed.define(_text(name), SCRIPT_DEFINITIONS[node.type], _line(node))
    elif node.type in ("lexical_declaration", "variable_declaration"):
        for declarator in node.named_children:
            name = declarator.child_by_field_name("name")
            if declarator.type == "variable_declarator" and name and name.type == "identifier":
                parsed.define(_text(name), "variable", _line(declarator))


GO_NAMES = {"identifier", "type_identifier", "field_identifier", "package_identifier"}


def parse_go(source: bytes) -> Parsed:
    root = _tree(source, "go")
    parsed = Parsed()
    for node in root.children:
        _go_definition(parsed, node)
    for node in _walk(root):
        if node.type in GO_NAMES:
            parsed.use(_text(node), _line(node))
        elif node.type in ("interpreted_string_literal_content", "raw_string_literal_content"):
            parsed.mention(_text(node), _line(node))
        elif node.type == "import_spec":
            path = node.child_by_field_name("path")
            if path is not None:
                parsed.imports.append(_string(path))
    return parsed


def _go_definition(parsed: Parsed, node: Any) -> None:
    kind = node.type
    if kind == "package_clause":
        parsed.package = _text(node.named_children[0]) if node.named_children else ""
    elif kind == "function_declaration":
        parsed.define(_text(node.child_by_field_name("name")), "function", _line(node))
    elif kind == "method_declaration":
        receiver = node.child_by_field_name("receiver")
        types = [c for c in _walk(receiver) if c.type == "type_identifier"] if receiver else []
        owner = f"{_text(types[0])}." if types else ""
        parsed.define(owner + _text(node.child_by_field_name("name")), "method", _line(node))
    elif kind == "type_declaration":
        for spec in node.named_children:
            if spec.type in ("type_spec", "type_alias"):
                parsed.define(_text(spec.child_by_field_name("name")), "type", _line(spec))
    elif kind in ("const_declaration", "var_declaration"):
        for spec in _walk(node):
            if spec.type in ("const_spec", "var_spec"):
                for name in spec.children_by_field_name("name"):
                    parsed.define(_text(name), kind.split("_")[0], _line(spec))
