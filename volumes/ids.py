"""Integers and ids from text: ASCII digits only, one parser for the CLI, the API and the store.

Python's `str.isdigit` and `int` accept far more than a user means by a number: superscripts
('¹' passes `isdigit` but `int` refuses it), other scripts' digits ('٥' and '５' both read as 5),
underscores ('1_0') and surrounding blanks; and `int` refuses strings over 4,300 digits with an
error of its own. Ids here are decimal, at most 19 digits (the store's signed 64-bit columns),
so anything else is refused with one line before `int` sees it.
"""
from __future__ import annotations

import re

from volumes.errors import InputError

MAX_ID = 2**63 - 1  # ids live in signed 64-bit columns
_DECIMAL = re.compile(r"[0-9]{1,19}")


def is_decimal(text: str) -> bool:
    """True for 1 to 19 ASCII digits and nothing else (no sign, blank, underscore or other script)."""
    return isinstance(text, str) and _DECIMAL.fullmatch(text) is not None


def parse_int(text: str, what: str, minimum: int = 0, maximum: int = MAX_ID) -> int:
    """`text` as an integer in [minimum, maximum], or InputError naming `what`."""
    if not is_decimal(text):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise InputError(f"{what} must be an integer from {minimum} to {maximum} in ASCII digits, got {shown!r}")
    value = int(text)
    if not minimum <= value <= maximum:
        raise InputError(f"{what} must be an integer from {minimum} to {maximum}, got {value}")
    return value


def parse_id(value: "int | str", what: str) -> int:
    """A positive 64-bit id given as an int (not a bool) or a string of ASCII digits."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InputError(f"{what} must be a positive integer id")
    if isinstance(value, int):
        if not 0 < value <= MAX_ID:
            raise InputError(f"{what} must be a positive integer id up to {MAX_ID}, got {value}")
        return value
    return parse_int(value.strip(), what, minimum=1)


def parse_id_list(text: str, what: str) -> list[int]:
    """'12,34' -> [12, 34]; empty items are skipped."""
    return [parse_id(item, what) for item in text.split(",") if item.strip()]
