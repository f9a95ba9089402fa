"""Scalar texts of the memoize key grammar (see ``_keys``): numbers, str, times.

Each function returns the text of one value of its type, built only from the value itself (the
same in every process); the tag letters and ``<num>`` forms are specified in ``_keys``.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import math
from typing import Final

__all__ = [
    "DECIMAL_EXACT_LIMIT",
    "datetime_text",
    "decimal_text",
    "float_text",
    "fraction_text",
    "int_text",
    "str_text",
    "tagged",
    "time_text",
    "timedelta_text",
    "type_name",
]


def type_name(cls: type) -> str:
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def tagged(tag: str, text: str) -> str:
    return tag + str(len(text)) + ":" + text


def int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # past sys.get_int_max_str_digits(): hex has no limit
        return hex(value)


def _ratio_text(p: int, q: int) -> str:
    """Canonical text of the rational p/q (lowest terms, q > 0)."""
    if q == 1:
        return int_text(p)
    try:
        f = p / q
    except OverflowError:
        return f"{int_text(p)}/{int_text(q)}"
    if f.as_integer_ratio() == (p, q):
        return repr(f)  # the value is exactly this float: share the float's text
    return f"{int_text(p)}/{int_text(q)}"


def float_text(value: float) -> str:
    if value != value:
        return "nan"
    if value in (_INF, -_INF):
        return "inf" if value > 0 else "-inf"
    if value.is_integer():
        return int_text(int(value))  # also maps -0.0 to "0"
    return repr(value)


_INF: Final = float("inf")


#: A Decimal whose normalized digits plus exponent size exceed this is keyed by its decimal
#: text instead of its exact ratio: ``as_integer_ratio()`` of ``Decimal("1e20000000")`` would
#: build a 20-million-digit int. Every float, and every int ``str()`` can print, stays below it.
DECIMAL_EXACT_LIMIT: Final = 4300


def decimal_text(value: decimal.Decimal) -> str:
    if value.is_nan():
        return "nan"
    if value.is_infinite():
        return "-inf" if value.is_signed() else "inf"
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite: nan and inf were handled above
    if len(digits) + abs(exponent) <= DECIMAL_EXACT_LIMIT:
        return _ratio_text(*value.as_integer_ratio())
    # Normalize (strip trailing zeros) so equal Decimals written differently share one text.
    coefficient = "".join(map(str, digits)).rstrip("0")
    if not coefficient:
        return "0"
    exponent += len(digits) - len(coefficient)
    if len(coefficient) + abs(exponent) > DECIMAL_EXACT_LIMIT:
        return ("-" if sign else "") + coefficient + "E" + str(exponent)
    p = int(coefficient)
    if exponent >= 0:
        p, q = p * 10**exponent, 1
    else:
        q = 10**-exponent
        common = math.gcd(p, q)
        p, q = p // common, q // common
    return _ratio_text(-p if sign else p, q)


def fraction_text(value: fractions.Fraction) -> str:
    return _ratio_text(value.numerator, value.denominator)


def str_text(value: str) -> str:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: no UTF-8 form, so no key text either
            return "S" + value.encode("utf-8", "surrogatepass").hex()
    return "s" + str(len(value)) + ":" + value


def datetime_text(value: datetime.datetime) -> str:
    offset = value.utcoffset()
    if offset is None:
        return tagged("D", value.isoformat())
    try:
        utc = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    except OverflowError:  # near datetime.min/max: the instant as microseconds
        delta = value.replace(tzinfo=None) - datetime.datetime.min - offset
        return "D" + int_text(delta // datetime.timedelta(microseconds=1)) + "Z"
    return tagged("D", utc.isoformat() + "Z")


def time_text(value: datetime.time) -> str:
    offset = value.utcoffset()
    if offset is None:
        return tagged("h", value.isoformat())
    micros = (
        (value.hour * 3600 + value.minute * 60 + value.second) * 1_000_000 + value.microsecond
    ) - offset // datetime.timedelta(microseconds=1)
    return "hZ" + str(micros)


def timedelta_text(value: datetime.timedelta) -> str:
    return "r" + str(value // datetime.timedelta(microseconds=1))
