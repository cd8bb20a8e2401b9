"""Closed sets of values that settings and the CLI's options share.

Nothing heavy here: the CLI declares its options with these without loading the settings
(pydantic-settings), so ``--help`` starts quickly.
"""

from __future__ import annotations

from enum import StrEnum


class Distance(StrEnum):
    cosine = "cosine"
    dot = "dot"
    euclid = "euclid"
    manhattan = "manhattan"


class MixpeekApiVersion(StrEnum):
    """Which Mixpeek API the service speaks: the November-2024 one, v1, or whichever answers."""

    v2024 = "2024"
    v1 = "v1"
    auto = "auto"
