"""JSON pointers (RFC 6901) into request bodies, as Klaviyo puts them in ``source.pointer``.

A client narrows a 400 to its bad items by reading the pointer's prefix, so every pointer the
emulator builds names the full path from the document root to the offending value.
"""

from __future__ import annotations

from collections.abc import Iterable


def escape(token: str | int) -> str:
    """One reference token, escaped: ``~`` -> ``~0`` and ``/`` -> ``~1`` (in that order)."""
    text = str(token)
    if "~" in text or "/" in text:
        text = text.replace("~", "~0").replace("/", "~1")
    return text


def pointer(*tokens: str | int) -> str:
    """The pointer naming ``tokens`` below the root; ``pointer()`` is the root, ``""``."""
    return join("", tokens)


def join(base: str, tokens: Iterable[str | int]) -> str:
    """``base`` extended by ``tokens``; ``base`` is an already escaped pointer."""
    parts = [base]
    parts.extend("/" + escape(t) for t in tokens)
    return "".join(parts)


def split(ptr: str) -> list[str]:
    """The unescaped reference tokens of ``ptr``; raises ValueError if it is not a pointer."""
    if ptr == "":
        return []
    if not ptr.startswith("/"):
        raise ValueError(f"a JSON pointer starts with '/': {ptr!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in ptr[1:].split("/")]
