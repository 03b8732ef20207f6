"""The source kinds medray knows, by the name data.source gives them. Each kind's module calls
`register` once; everything else asks `get_source_kind` instead of comparing names."""

from __future__ import annotations

from medray.data.sources.base import SourceKind
from medray.errors import MedrayError

# In registration order: the order messages list the kinds in.
_KINDS: dict[str, SourceKind] = {}


def register(kind: SourceKind) -> SourceKind:
    """Make `kind` known as data.source `kind.name`; raises ValueError for a nameless kind or a
    name already taken (two modules claiming one kind is a mistake, not an override)."""
    if not isinstance(kind, SourceKind) or not kind.name or not kind.layout:
        raise ValueError(f"{kind!r}: a source kind is a SourceKind with a name and a layout sentence")
    if kind.name in _KINDS:
        raise ValueError(f"data.source {kind.name!r} is registered already (by {type(_KINDS[kind.name]).__name__})")
    _KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Forget a kind registered for a while (a test's or a plugin's own)."""
    _KINDS.pop(name, None)


def get_source_kind(name: str) -> SourceKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise MedrayError(f"data.source={name!r} is not a source kind medray knows; use "
                          f"{describe_kinds()}") from None


def source_kind_names() -> tuple[str, ...]:
    return tuple(_KINDS)


def describe_kinds(quote: str = "") -> str:
    """The kinds' names for a sentence: `parquet, folders or npz` (each in `quote`s)."""
    names = [f"{quote}{name}{quote}" for name in _KINDS]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
