"""Refusals counted by rule: which RULES.md rules the bodies a client sent broke, and how often.

A test that sends only good bodies asserts this stays empty (``tests/fixtures_emulator.py``);
a consumer that breaks a rule shows up here by rule id even when its dead-letter handling hides
the 400. Besides RULES.md ids, ``schema`` counts OpenAPI schema violations and ``json`` bodies
that are not JSON. Counted per endpoint name, one count per error in the 400.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Mapping

#: endpoint name -> the RULES.md ids of its item count and payload size limits.
COUNT_RULES: Mapping[str, str] = {
    "events": "E2",
    "profile_import": "P1",
    "subscribe": "S1",
    "unsubscribe": "U2",
    "catalog_create": "C1",
    "catalog_update": "C1",
    "catalog_delete": "C1",
}
SIZE_RULES: Mapping[str, str] = {
    "events": "E3",
    "profile_import": "P2",
    "catalog_create": "C2",
    "catalog_update": "C2",
    "catalog_delete": "C2",
}


class RuleViolations:
    """Thread-safe counts of refusals per endpoint and rule id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def add(self, endpoint: str, rules: Mapping[str, int]) -> None:
        """Count the rules one refused request broke (rule id -> errors; zeros are skipped)."""
        broken = {rule: count for rule, count in rules.items() if count > 0}
        if not broken:
            return
        with self._lock:
            self._counts[endpoint].update(broken)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """endpoint -> rule id -> refusals (only what was seen)."""
        with self._lock:
            return {name: dict(counts) for name, counts in self._counts.items() if counts}

    def reset(self) -> None:
        """Forget every count."""
        with self._lock:
            self._counts.clear()
