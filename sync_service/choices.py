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
