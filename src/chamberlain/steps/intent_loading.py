"""Load and validate the intent of a whole commit, parsing only files not seen before.

Parsing YAML with positions and checking each document against the JSON Schema is the
expensive part of reading intent (milliseconds per file), and a push usually changes one file
of many. What a file contributes depends only on its path and content, so the parsed form is
cached per (path, blob id) in a process-wide LRU: the second push of a 1,000-file repository
reads and parses only the changed files. Cross-document validation (:func:`validate.check`)
runs over the whole set every time; it is cheap and in memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from chamberlain.adapters.intent_source import IntentSource, cache_key

if TYPE_CHECKING:
    from chamberlain.model.intent import Intent
    from chamberlain.model.loader import LoadedFile, LoadResult, Problem

FILE_CACHE_SIZE = 20_000
COMMIT_CACHE_SIZE = 16

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """A small thread-safe LRU map."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


@dataclass(frozen=True)
class LoadedIntent:
    """The intent at one commit, with every problem found (loader's and cross-document)."""

    commit: str
    result: LoadResult
    problems: tuple[Problem, ...]
    files: Mapping[str, str]  # every regular file of the commit -> blob id
    parsed: int  # files parsed for this load (0 when everything came from the cache)

    @property
    def intent(self) -> Intent:
        return self.result.intent

    @property
    def valid(self) -> bool:
        return not self.problems


# Process-wide: every IntentLoader (and step instance) in the process shares them.
FILE_CACHE: LruCache[tuple[str, str], LoadedFile] = LruCache(FILE_CACHE_SIZE)
COMMIT_CACHE: LruCache[tuple[str, str], LoadedIntent] = LruCache(COMMIT_CACHE_SIZE)


class IntentLoader:
    """Reads commits through an :class:`IntentSource` and the process-wide parse caches."""

    def __init__(
        self,
        source: IntentSource,
        *,
        files: LruCache[tuple[str, str], LoadedFile] | None = None,
        commits: LruCache[tuple[str, str], LoadedIntent] | None = None,
    ) -> None:
        self.source = source
        self._files = FILE_CACHE if files is None else files
        self._commits = COMMIT_CACHE if commits is None else commits

    def load(self, url: str, sha: str) -> LoadedIntent:
        """The intent of commit ``sha`` of ``url`` (fetched if needed), validated as a whole.

        Raises :class:`~chamberlain.adapters.intent_source.IntentSourceError` when the commit
        cannot be read; an invalid intent is not an error here (see ``problems``).
        """
        key = (cache_key(url), sha)
        known = self._commits.get(key)
        if known is not None:
            return known
        tree = self.source.tree_at(url, sha)
        # imported once there is a commit to parse: a delivery that fails or is answered
        # before (unreadable repository, ignored ref) does not pay for YAML and the schema
        from chamberlain.model.loader import combine, is_intent_file
        from chamberlain.model.loader import load_file as parse_file
        from chamberlain.model.validate import check

        intent_files = {path: blob for path, blob in tree.items() if is_intent_file(path)}
        loaded: list[LoadedFile] = []
        missing: dict[str, str] = {}
        for path, blob in intent_files.items():
            cached = self._files.get((path, blob))
            if cached is None:
                missing[path] = blob
            else:
                loaded.append(cached)
        if missing:
            contents = self.source.blobs(url, missing.values())
            for path, blob in missing.items():
                parsed = parse_file(path, contents[blob])
                self._files.put((path, blob), parsed)
                loaded.append(parsed)
        result = combine(loaded)
        outcome = LoadedIntent(
            commit=sha,
            result=result,
            problems=tuple(check(result)),
            files=dict(tree),
            parsed=len(missing),
        )
        self._commits.put(key, outcome)
        return outcome
