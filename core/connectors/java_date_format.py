"""Java ``DateTimeFormatter`` patterns (``"yyyy-MM-dd--HH"``) and zone ids, in Python.

Flink's date-time bucket assigner takes a Java pattern, and users copy theirs from Flink jobs,
so we accept the same text. Rather than mapping onto ``strftime`` (which has no portable
unpadded fields), a pattern is compiled once into literal and field tokens and formatted
directly. Supported letters: ``y u M L d D H h K k m s S E a Z X x z``; text in single quotes is
literal and ``''`` is a quote. Any other letter is rejected, as Java reserves all letters.

Example::

    >>> from datetime import datetime, timezone
    >>> fmt = JavaDateFormat("yyyy-MM-dd--HH 'h'")
    >>> fmt.format(datetime(2024, 3, 5, 7, 30, tzinfo=timezone.utc))
    '2024-03-05--07 h'
    >>> resolve_zone("GMT+8").utcoffset(None)
    datetime.timedelta(seconds=28800)
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["JavaDateFormat", "resolve_zone"]

_LETTERS = set("yuMLdDHhKkmsSEaZXxz")
_OFFSET = re.compile(r"^(?:UTC|GMT|UT)?([+-])(\d{1,2})(?::?(\d{2}))?$")


def resolve_zone(timezone_id: str | None) -> tzinfo | None:
    """A ``tzinfo`` for a Java zone id; ``None`` means the system's local zone.

    Accepts IANA names (``Europe/Berlin``), ``UTC``/``GMT``/``Z`` and offsets such as
    ``+08:00``, ``GMT+8`` or ``UTC-05:30``.
    """
    if timezone_id is None:
        return None
    if timezone_id in ("UTC", "GMT", "UT", "Z"):
        return timezone.utc
    match = _OFFSET.match(timezone_id)
    if match:
        sign, hours, minutes = match.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes or 0))
        return timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(timezone_id)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone id {timezone_id!r}") from None


def _tokenize(pattern: str) -> list[tuple[str, int] | str]:
    """Literal strings and ``(letter, count)`` fields."""
    tokens: list[tuple[str, int] | str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "'":
            end = pattern.find("'", i + 1)
            while end != -1 and end + 1 < len(pattern) and pattern[end + 1] == "'":
                end = pattern.find("'", end + 2)  # '' inside quotes is a quote
            if end == -1:
                raise ValueError(f"unterminated quote in date pattern {pattern!r}")
            tokens.append(pattern[i + 1 : end].replace("''", "'") or "'")
            i = end + 1
        elif ch.isascii() and ch.isalpha():
            if ch not in _LETTERS:
                raise ValueError(f"unsupported letter {ch!r} in date pattern {pattern!r}")
            j = i
            while j < len(pattern) and pattern[j] == ch:
                j += 1
            tokens.append((ch, j - i))
            i = j
        else:
            tokens.append(ch)
            i += 1
    return tokens


def _offset(value: datetime, colon: bool, zero_as_z: bool) -> str:
    delta = value.utcoffset() or timedelta(0)
    if zero_as_z and not delta:
        return "Z"
    minutes = int(delta.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}{':' if colon else ''}{mins:02d}"


def _field(letter: str, count: int, value: datetime) -> str:
    def num(n: int) -> str:
        return str(n).zfill(count)

    if letter in "yu":
        return f"{value.year % 100:02d}" if count == 2 else num(value.year)
    if letter in "ML":
        if count >= 4:
            return value.strftime("%B")
        return value.strftime("%b") if count == 3 else num(value.month)
    if letter == "E":
        return value.strftime("%A" if count >= 4 else "%a")
    simple = {
        "d": value.day,
        "D": value.timetuple().tm_yday,
        "H": value.hour,
        "h": value.hour % 12 or 12,
        "K": value.hour % 12,
        "k": value.hour or 24,
        "m": value.minute,
        "s": value.second,
    }
    if letter in simple:
        return num(simple[letter])
    if letter == "S":
        return f"{value.microsecond:06d}"[:count].ljust(count, "0")
    if letter == "a":
        return "AM" if value.hour < 12 else "PM"
    if letter == "Z":
        return _offset(value, colon=count >= 4, zero_as_z=False)
    if letter in "Xx":
        return _offset(value, colon=count >= 3, zero_as_z=letter == "X")
    return value.tzname() or ""  # "z"


class JavaDateFormat:
    """A compiled Java date-time pattern that formats aware ``datetime`` values."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._tokens = _tokenize(pattern)

    def format(self, value: datetime) -> str:
        return "".join(
            tok if isinstance(tok, str) else _field(tok[0], tok[1], value) for tok in self._tokens
        )

    def __repr__(self) -> str:
        return f"JavaDateFormat({self.pattern!r})"
