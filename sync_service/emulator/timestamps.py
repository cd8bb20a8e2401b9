"""Timestamps as the emulator keeps, compares and renders them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# ISO 8601 as Mixpeek and its clients write it: a date, optionally a time with or without
# seconds and a fraction, optionally Z or an offset. Checked before parsing so that strings
# fromisoformat also reads ("20240101", week dates) are not taken for date-times. [0-9], not
# \d: \d matches any Unicode digit.
_SHAPE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?)?"
    r"(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)
NAIVE_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


class Instant(int):
    """A UTC instant in whole microseconds since the Unix epoch.

    An int rather than a datetime so that filtering and sorting thousands of assets compares
    plain numbers: building one datetime per asset costs more than the rest of the work.
    """

    __slots__ = ()

    @classmethod
    def parse(cls, value: object) -> Instant | None:
        """``value`` as an instant if it is one or an ISO 8601 date-time string, else None.

        A string without a zone is UTC, as Mixpeek's own naive timestamps are. Fractions
        beyond microseconds are cut (what the emulator's clock can tell apart).
        """
        if isinstance(value, Instant):
            return value
        if not isinstance(value, str) or _SHAPE.fullmatch(value) is None:
            return None
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:  # the right shape but no such date, e.g. 2024-13-45
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return cls((moment - _EPOCH) // _MICROSECOND)

    def as_datetime(self) -> datetime:
        return _EPOCH + timedelta(microseconds=int(self))

    def naive(self) -> str:
        """Asset format: UTC without a zone suffix ("MongoDB datetime format")."""
        return self.as_datetime().strftime(NAIVE_FORMAT)

    def zulu(self) -> str:
        """Feature format: UTC with a ``Z`` suffix."""
        return self.naive() + "Z"
