"""Which payload fields identify a patient, and every way their values may be written.

The schemas (``schemas/clinic_event.v*.avsc``) mark the PHI: a patient's names, date of
birth and phone, and the patient and insurance member ids. ``dlq show`` masks these fields
in the record value; :func:`identifying_values` lists their values, so that a handler's error
text can be masked against the failing event's own data before it travels in a header
(:func:`retry_topics.redaction.mask_values`). A handler that writes
``ValueError(f"no visit for {first} {last}, member {member_id}")`` quotes exactly these.

The list holds each value as it is, plus the forms in which a message is likely to quote it:

* names: each word on its own (``Mary Ann`` -> ``Mary``, ``Ann``), and without accents;
* ids and phones: each letter-and-digit part with four or more digits, and each run of
  four or more digits (``TEST-MBR-000101`` -> ``000101``, ``MBR998877`` -> ``998877``),
  since "member 000101" identifies as well;
* dates of birth: year-month-day, month-day-year and day-month-year, zero-padded or not,
  with two- or four-digit years, and with English month names (``1985-04-12``, ``4/12/85``,
  ``12.04.1985``, ``April 12, 1985``, ``12 Apr 1985``, ``datetime.date(1985, 4, 12)``).
  Separators do not matter to the matcher, so one form per order of fields is enough.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Iterator, Mapping
from datetime import date, timedelta
from typing import Any

__all__ = ["NAME_FIELDS", "PATIENT_IDENTIFYING_FIELDS", "identifying_values"]

#: Payload fields that identify a patient, at any depth of the event.
PATIENT_IDENTIFYING_FIELDS = frozenset(
    {"first_name", "last_name", "date_of_birth", "phone", "insurance_member_id", "patient_id"}
)
#: The identifying fields that hold a person's name (quoted word by word, too).
NAME_FIELDS = frozenset({"first_name", "last_name"})

_EPOCH = date(1970, 1, 1)
_WORD = re.compile(r"[^\W\d_]{2,}")
_PART_WITH_DIGITS = re.compile(r"[^\W_]*\d[^\W_]*")
_DIGIT_RUN = re.compile(r"\d{4,}")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")


def identifying_values(event: Mapping[str, Any]) -> list[str]:
    """Every text by which ``event``'s patient-identifying fields may appear in a message.

    ``event`` is in the codec's form (dates as ``datetime.date``); a date of birth given as
    an Avro ``int`` (days since 1970-01-01) or an ISO string is understood too.
    """
    values: dict[str, None] = {}  # ordered and without repeats
    for name, value in _identifying_fields(event):
        for text in _forms(name, value):
            values.setdefault(text)
    return list(values)


def _identifying_fields(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for name, inner in value.items():
            if name in PATIENT_IDENTIFYING_FIELDS:
                if inner is not None:
                    yield name, inner
            else:
                yield from _identifying_fields(inner)
    elif isinstance(value, list | tuple):
        for inner in value:
            yield from _identifying_fields(inner)


def _forms(name: str, value: Any) -> Iterator[str]:
    if isinstance(value, date):
        yield from _date_forms(value)
        return
    if isinstance(value, int) and not isinstance(value, bool) and name == "date_of_birth":
        try:
            yield from _date_forms(_EPOCH + timedelta(days=value))
        except OverflowError:
            yield str(value)
        return
    text = str(value)
    yield text
    if name == "date_of_birth":
        with contextlib.suppress(ValueError):  # not a date after all: its text is enough
            yield from _date_forms(date.fromisoformat(text))
    if name in NAME_FIELDS:
        for form in (text, _without_accents(text)):
            yield form
            yield from _WORD.findall(form)
    else:
        yield from (part for part in _PART_WITH_DIGITS.findall(text)
                    if sum(c.isdigit() for c in part) >= 4)
        yield from _DIGIT_RUN.findall(text)


def _without_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _date_forms(day: date) -> Iterator[str]:
    years = (f"{day.year:04d}", f"{day.year % 100:02d}")
    months = (f"{day.month:02d}", str(day.month))
    days = (f"{day.day:02d}", str(day.day))
    for month in months:
        for dom in days:
            yield f"{years[0]} {month} {dom}"
            for year in years:
                yield f"{month} {dom} {year}"
                yield f"{dom} {month} {year}"
    month_name = _MONTHS[day.month - 1]
    for name in (month_name, month_name[:3]):
        for year in years:
            yield f"{name} {day.day} {year}"
            yield f"{day.day} {name} {year}"
            yield f"{name} {day.day:02d} {year}"
            yield f"{day.day:02d} {name} {year}"
