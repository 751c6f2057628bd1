"""A name -> object registry that refuses duplicates and suggests near misses."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Generic, Iterator, TypeVar

from bench_harness.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object and where it came from."""

    name: str
    obj: T
    source: str
    """Human-readable origin: the plugin module and the distribution and version that installed it."""
    provenance: dict = field(default_factory=dict)
    """The same origin as data, written into run records: ``plugin``, ``module``, ``distribution``,
    ``version`` (the last two None for a plugin registered by hand)."""


class Registry(Generic[T]):
    """Objects of one kind (pruners, datasets or models), keyed by their unique name."""

    def __init__(self, kind: str, hint: str = "") -> None:
        self.kind = kind
        self.hint = hint
        """Appended to 'unknown name' messages (why the registry may be emptier than expected)."""
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, obj: T, source: str, provenance: dict | None = None) -> None:
        """Register ``obj`` under ``name``; a second object under a taken name is an error naming both."""
        if not name or not isinstance(name, str):
            raise ValueError(f"A {self.kind} from {source} has no name.")
        if name in self._entries:
            first = self._entries[name].source
            raise UserError(
                f"Two plugins register a {self.kind} named '{name}': {first} and {source}; "
                f"uninstall one of them or limit the loaded plugins with BENCH_HARNESS_PLUGINS."
            )
        self._entries[name] = Entry(name, obj, source, dict(provenance or {}))

    def remove(self, name: str) -> None:
        """Forget ``name`` (a plugin whose registration failed half-way is taken out whole)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name gets a "did you mean" answer."""
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        """The full entry (object and source) registered as ``name``."""
        try:
            return self._entries[name]
        except KeyError:
            raise UserError(self._unknown_message(name)) from None

    def _unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        known = ", ".join(sorted(self._entries)) or "none"
        return f"Unknown {self.kind} '{name}'.{hint} Known {self.kind}s: {known}{self.hint}."

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._entries)

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
