"""Read an intent repository into the typed model, remembering the line of every key.

Input is a mapping of repository-relative paths to bytes, so the same code loads a checkout
(:func:`load_dir`) or the files of a commit read straight from Git (:func:`load_files`). The
loader reports what it cannot load (YAML syntax, unknown kinds, schema violations, literal
values) as :class:`Problem` values; cross-document rules live in ``chamberlain.model.validate``.
Documents with a problem are left out of the typed model, so the model is always consistent.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator, ValidationError
from referencing import Registry, Resource

from chamberlain.lazy import lazy_module
from chamberlain.model.intent import (
    API_VERSION,
    BOOTSTRAP_DIR,
    Document,
    Intent,
    KeyPath,
    Origin,
    build_document,
)

if TYPE_CHECKING:
    import yaml
else:
    yaml = lazy_module("yaml")

KINDS = ("Environment", "AuthorityConfig", "SecretIntent", "BootstrapSecret", "DynamicCredential")
YAML_SUFFIXES = (".yaml", ".yml")
SOPS_CONFIG = ".sops.yaml"
# Keys that hold a literal value wherever they appear in an intent document.
PLAINTEXT_KEYS = frozenset({"value", "values", "data", "stringData"})
MAX_KEYS_PER_DOCUMENT = 20_000


# libyaml composes ~5x faster than the pure-Python parser (same nodes, same marks); intent
# repositories of 1,000 files are parsed on every cold start. Looked up on the first parse:
# yaml is imported lazily, as many deliveries parse nothing.
@cache
def _composer() -> Any:
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# Mappings whose keys are names chosen by the user, not schema keywords.
_NAME_MAPS = frozenset({"generate", "labels"})


@dataclass(frozen=True, order=True)
class Problem:
    """One reason an intent repository is invalid. ``message`` never holds a secret value."""

    file: str
    line: int
    column: int
    code: str
    message: str

    def format(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.code}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "code": self.code,
            "message": self.message,
        }


@dataclass(frozen=True)
class YamlDocument:
    """One parsed YAML document and the position of each of its keys."""

    file: str
    index: int
    data: Any
    origin: Origin


@dataclass(frozen=True)
class LoadResult:
    """The typed model of the documents that loaded cleanly, and why the others did not."""

    intent: Intent
    documents: tuple[Document, ...]
    problems: tuple[Problem, ...]
    document_count: int
    files: frozenset[str]
    sops_files: Mapping[str, YamlDocument] = field(hash=False)
    plain_bootstrap_files: frozenset[str] = frozenset()
    # (kind, name) of documents that exist but did not load: references to them are not
    # reported again as unknown, the document's own problem already says what to fix.
    rejected: frozenset[tuple[str, str]] = frozenset()

    @property
    def valid(self) -> bool:
        return not self.problems


# ---- YAML with positions ----------------------------------------------------------------


class _YamlFileError(Exception):
    def __init__(self, line: int, column: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.column = column
        self.message = message


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _walk_positions(
    node: yaml.Node,
    path: KeyPath,
    constructor: yaml.SafeLoader,
    out: dict[KeyPath, tuple[int, int]],
    stack: frozenset[int],
) -> None:
    if id(node) in stack:
        raise _YamlFileError(*_mark(node), "recursive alias")
    if len(out) > MAX_KEYS_PER_DOCUMENT:
        # Aliases can expand a small file exponentially ("billion laughs"); intent is small.
        raise _YamlFileError(*_mark(node), f"more than {MAX_KEYS_PER_DOCUMENT} keys and items")
    inner = stack | {id(node)}
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if key == "<<":
                continue
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                key = str(key)
            if key in seen:
                raise _YamlFileError(*_mark(key_node), f"duplicate key {str(key)[:60]!r}")
            seen.add(key)
            out[(*path, key)] = _mark(key_node)
            _walk_positions(value_node, (*path, key), constructor, out, inner)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            out[(*path, index)] = _mark(item)
            _walk_positions(item, (*path, index), constructor, out, inner)


def parse_yaml(text: str, file: str) -> list[YamlDocument]:
    """Every non-empty document of ``text``; raises _YamlFileError on the first defect."""
    documents: list[YamlDocument] = []
    try:
        for index, node in enumerate(yaml.compose_all(text, Loader=_composer())):
            if node is None:
                continue
            constructor = yaml.SafeLoader("")
            positions: dict[KeyPath, tuple[int, int]] = {}
            _walk_positions(node, (), constructor, positions, frozenset())
            data = constructor.construct_document(node)
            if data is None:
                continue
            line, column = _mark(node)
            origin = Origin(file, line, column, index, positions)
            documents.append(YamlDocument(file, index, data, origin))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        detail = exc.problem or exc.context or "invalid YAML"
        raise _YamlFileError(line, column, f"invalid YAML: {detail}") from None
    except yaml.YAMLError as exc:
        position = getattr(exc, "position", None)
        raise _YamlFileError(1, 1 if position is None else position + 1, "invalid YAML") from None
    except RecursionError:
        raise _YamlFileError(1, 1, "YAML nesting too deep") from None
    return documents


# ---- JSON Schema ------------------------------------------------------------------------


@cache
def intent_schema() -> dict[str, Any]:
    """The JSON Schema of one intent document (also shipped for editors)."""
    text = resources.files("chamberlain.model").joinpath("intent.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _kind_validator(kind: str) -> Draft202012Validator:
    schema = intent_schema()
    registry: Registry[Any] = Registry().with_resource(
        schema["$id"], Resource.from_contents(schema)
    )
    return Draft202012Validator({"$ref": f"{schema['$id']}#/$defs/{kind}"}, registry=registry)


def _where(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "document"


def _schema_message(error: ValidationError) -> str:
    """Describe a schema violation without repeating the offending value."""
    kind: Any = error.validator
    expected: Any = error.validator_value
    schema: Any = error.schema
    described = schema.get("description") if isinstance(schema, dict) else None
    if kind == "type":
        names = expected if isinstance(expected, list) else [expected]
        return "must be " + " or ".join(
            {"object": "a mapping", "array": "a list"}.get(n, f"a {n}") for n in names
        )
    if kind == "enum":
        return "must be one of: " + ", ".join(str(v) for v in expected)
    if kind == "const":
        return f"must be {expected!r}"
    if kind == "pattern":
        return f"invalid format ({described})" if described else "invalid format"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        symbol = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">"}.get(kind, "<")
        return f"must be {symbol} {expected}"
    if kind == "minItems":
        return f"needs at least {expected} item(s)"
    if kind == "minProperties":
        return f"needs at least {expected} entry(ies)"
    if kind == "minLength":
        return "must not be empty"
    if kind == "uniqueItems":
        return "items must be unique"
    if kind == "maxLength":
        return f"must be at most {expected} characters"
    return f"violates the schema ({kind})"


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _schema_problems(doc: YamlDocument, data: Any, handled: set[KeyPath]) -> list[Problem]:
    problems: dict[tuple[KeyPath, str, str], Problem] = {}

    def add(path: KeyPath, code: str, message: str) -> None:
        line, column = doc.origin.at(*path)
        problem = Problem(doc.file, line, column, code, f"{_where(path)}: {message}")
        problems.setdefault((path, code, message), problem)

    errors: Iterator[ValidationError] = _kind_validator(data["kind"]).iter_errors(data)
    for error in errors:
        path: KeyPath = tuple(error.absolute_path)
        schema: Any = error.schema if isinstance(error.schema, dict) else {}
        validator: Any = error.validator
        instance: Any = error.instance
        hint = schema.get("x-chamberlain", {}).get(validator, {})
        code = hint.get("code", "schema")
        if validator == "additionalProperties":
            known = schema.get("properties", {})
            for extra in sorted(set(instance) - set(known), key=str):
                if (*path, extra) not in handled:
                    add(
                        (*path, extra),
                        code,
                        f"unknown key {str(extra)[:60]!r}{_suggest(str(extra), known)}",
                    )
            continue
        if validator == "required":
            required: Any = error.validator_value
            for missing in required:
                if missing not in instance:
                    text = hint.get("message", "required")
                    add(path, code, f"{text}: missing {missing!r}")
            continue
        if validator == "propertyNames":
            add(path, code, "invalid key name (letters, digits, '_', '.', '-')")
            continue
        add(path, code, hint.get("message") or _schema_message(error))
    return list(problems.values())


# ---- documents --------------------------------------------------------------------------


def _plaintext_paths(data: Any, path: KeyPath = ()) -> Iterator[KeyPath]:
    """Paths of keys that carry a literal value (value/data/stringData) anywhere in ``data``."""
    if isinstance(data, dict):
        names_only = bool(path) and path[-1] in _NAME_MAPS
        for key, value in data.items():
            if not names_only and key in PLAINTEXT_KEYS and value not in (None, "", {}, []):
                yield (*path, key)
            else:
                yield from _plaintext_paths(value, (*path, key))
    elif isinstance(data, list):
        for index, item in enumerate(data):
            yield from _plaintext_paths(item, (*path, index))


def _load_document(doc: YamlDocument) -> tuple[Document | None, list[Problem]]:
    data = doc.data
    origin = doc.origin
    problems: list[Problem] = []

    def problem(path: KeyPath, code: str, message: str) -> Problem:
        line, column = origin.at(*path)
        return Problem(doc.file, line, column, code, message)

    if not isinstance(data, dict):
        message = "a document must be a mapping with apiVersion, kind, metadata and spec"
        return None, [problem((), "schema", message)]
    handled = set(_plaintext_paths(data))
    for path in sorted(handled, key=lambda p: origin.at(*p)):
        problems.append(
            problem(
                path,
                "plaintext-value",
                f"{_where(path)}: a literal value in Git; intent declares secrets, "
                "the authority holds their values",
            )
        )
    api_version = data.get("apiVersion")
    if api_version != API_VERSION:
        what = "missing apiVersion" if api_version is None else "unsupported apiVersion"
        problems.append(
            problem(("apiVersion",), "unknown-api-version", f"{what}; expected {API_VERSION}")
        )
        return None, problems
    kind = data.get("kind")
    if kind not in KINDS:
        named = "missing kind" if kind is None else f"unknown kind {str(kind)[:60]!r}"
        hint = _suggest(str(kind), KINDS) if kind is not None else ""
        problems.append(
            problem(("kind",), "unknown-kind", f"{named}{hint}; known: {', '.join(KINDS)}")
        )
        return None, problems
    schema_problems = _schema_problems(doc, data, handled)
    problems.extend(schema_problems)
    if schema_problems:
        return None, problems
    return build_document(data, origin), problems


def _identity(doc: YamlDocument) -> tuple[str, str] | None:
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("metadata"), dict):
        return None
    kind, name = data.get("kind"), data["metadata"].get("name")
    return (kind, name) if isinstance(kind, str) and isinstance(name, str) else None


def _is_sops(doc: YamlDocument) -> bool:
    return isinstance(doc.data, dict) and isinstance(doc.data.get("sops"), dict)


def _is_intent(doc: YamlDocument) -> bool:
    return isinstance(doc.data, dict) and "apiVersion" in doc.data and "sops" not in doc.data


def _considered(path: str) -> bool:
    """YAML files outside hidden directories, except the SOPS configuration."""
    parts = PurePosixPath(path).parts
    return (
        path.endswith(YAML_SUFFIXES)
        and not any(part.startswith(".") for part in parts)
        and path != SOPS_CONFIG
    )


@dataclass(frozen=True)
class LoadedFile:
    """What one file contributes to a repository, independent of every other file.

    A file's contribution depends only on its path and content, so callers that read many
    commits of one repository cache these by (path, blob id) and re-parse only what changed;
    :func:`combine` then assembles a :class:`LoadResult` exactly as :func:`load_files` does.
    """

    path: str
    documents: tuple[Document, ...] = ()
    problems: tuple[Problem, ...] = ()
    document_count: int = 0
    rejected: frozenset[tuple[str, str]] = frozenset()
    sops: YamlDocument | None = None
    plain_bootstrap: bool = False


def is_intent_file(path: str) -> bool:
    """Whether the loader reads ``path`` at all (YAML, not hidden, not the SOPS config)."""
    return _considered(path)


def load_file(path: str, content: bytes) -> LoadedFile:
    """Parse and type-check one file of an intent repository."""
    try:
        text = content.decode("utf-8-sig")
        parsed = parse_yaml(text, path)
    except UnicodeDecodeError:
        return LoadedFile(path, problems=(Problem(path, 1, 1, "yaml-syntax", "not UTF-8 text"),))
    except _YamlFileError as exc:
        problem = Problem(path, exc.line, exc.column, "yaml-syntax", exc.message)
        return LoadedFile(path, problems=(problem,))
    if parsed and _is_sops(parsed[0]):
        return LoadedFile(path, sops=parsed[0])
    in_bootstrap = PurePosixPath(path).parts[0] == BOOTSTRAP_DIR
    if in_bootstrap and not any(_is_intent(d) for d in parsed):
        return LoadedFile(path, plain_bootstrap=True)
    documents: list[Document] = []
    problems: list[Problem] = []
    rejected: set[tuple[str, str]] = set()
    for doc in parsed:
        document, found = _load_document(doc)
        problems.extend(found)
        if document is not None:
            documents.append(document)
        elif (identity := _identity(doc)) is not None:
            rejected.add(identity)
    return LoadedFile(
        path,
        documents=tuple(documents),
        problems=tuple(problems),
        document_count=len(parsed),
        rejected=frozenset(rejected),
    )


def combine(files: Iterable[LoadedFile]) -> LoadResult:
    """The repository made of ``files`` (taken in path order, as :func:`load_files` reads)."""
    documents: list[Document] = []
    problems: list[Problem] = []
    sops_files: dict[str, YamlDocument] = {}
    plain_bootstrap: set[str] = set()
    rejected: set[tuple[str, str]] = set()
    count = 0
    ordered = sorted(files, key=lambda f: f.path)
    for loaded in ordered:
        documents.extend(loaded.documents)
        problems.extend(loaded.problems)
        rejected.update(loaded.rejected)
        count += loaded.document_count
        if loaded.sops is not None:
            sops_files[loaded.path] = loaded.sops
        if loaded.plain_bootstrap:
            plain_bootstrap.add(loaded.path)
    return LoadResult(
        intent=Intent.from_documents(documents),
        documents=tuple(documents),
        problems=tuple(sorted(problems)),
        document_count=count,
        files=frozenset(f.path for f in ordered),
        sops_files=sops_files,
        plain_bootstrap_files=frozenset(plain_bootstrap),
        rejected=frozenset(rejected),
    )


def load_files(files: Mapping[str, bytes]) -> LoadResult:
    """Load an intent repository given as {relative posix path: content}."""
    return combine(load_file(path, files[path]) for path in sorted(files) if _considered(path))


def read_dir(root: Path) -> dict[str, bytes]:
    """Every regular YAML file under ``root`` (symlinks and hidden directories skipped)."""
    files: dict[str, bytes] = {}
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(directory, name)
            relative = path.relative_to(root).as_posix()
            if _considered(relative) and not path.is_symlink() and path.is_file():
                files[relative] = path.read_bytes()
    return files


def load_dir(root: Path) -> LoadResult:
    """Load the intent repository checked out at ``root``."""
    return load_files(read_dir(root))
