"""Which Klaviyo account a message goes to.

A deployment may serve several Klaviyo accounts (one per store or brand). The value of one
top-level field of the record (``store_id`` by default) picks the account; each account has
its own API key, rate limiters and batches. Without routing everything goes to one account.
"""

from __future__ import annotations

from collections.abc import Mapping

from consumer.decode import DecodedRecord
from consumer.errors import TranslationError
from consumer.messages import DEFAULT_ACCOUNT
from consumer.settings import RoutingSettings


class AccountRouter:
    """Maps a record to the name of the account that receives its operations."""

    def __init__(
        self, field: str | None, accounts: Mapping[str, str], default_account: str | None
    ) -> None:
        self._field = field
        self._accounts = dict(accounts)
        self._default = default_account

    @classmethod
    def from_settings(cls, routing: RoutingSettings | None) -> AccountRouter:
        if routing is None:
            return cls(None, {}, DEFAULT_ACCOUNT)
        return cls(routing.field, routing.accounts, routing.default_account)

    def account_for(self, record: DecodedRecord) -> str:
        """The account name; a value nobody maps (and no default) is bad data."""
        if self._field is None:
            return DEFAULT_ACCOUNT
        value = record.data.get(self._field)
        account = self._accounts.get(str(value)) if value is not None else None
        if account is not None:
            return account
        if self._default is not None:
            return self._default
        raise TranslationError(
            f"no Klaviyo account is configured for this {self._field}",
            rule="routing",
            field=self._field,
            record_name=record.record_name,
            detail={"value": str(value)},
        )
