"""Load-time problems of the translation rules, and the error that lists them all.

Checking never stops at the first problem: every rule file is read, every rule checked, and
:class:`RulesError` carries the whole list, each problem naming its file, line, rule and
field, so an operator fixes a broken ConfigMap in one round trip.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from consumer.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the rule files."""

    file: str
    line: int
    message: str
    rule: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        parts = [where]
        if self.rule is not None:
            parts.append(f"rule {self.rule!r}")
        if self.field is not None:
            parts.append(f"field {self.field!r}")
        return f"{': '.join(parts)}: {self.message}"


class RulesError(ConfigError):
    """The translation rules do not load; ``problems`` lists every reason.

    ``str(err)`` is a count line followed by one line per problem (unlike most ConfigErrors,
    which are one line: rules can be wrong in many places at once).
    """

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        count = len(self.problems)
        lines = [f"translation rules: {count} problem{'s' if count != 1 else ''}"]
        lines += [f"  {problem}" for problem in self.problems]
        super().__init__("\n".join(lines))
