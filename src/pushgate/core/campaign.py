"""A campaign from a spreadsheet: CSV bytes read into rows, a message template filled from
each row's columns, the rows cut into push bodies of at most ``PUSHGATE_MAX_RECIPIENTS``
entries, and each body's idempotency key. No I/O: ``pushgate send`` and ``POST
/api/v2/push-csv`` read the file and accept each body the way ``POST /api/v2/push`` does.

The CSV: UTF-8 with or without a byte order mark, a header row naming the columns, ``,`` or
``;`` (or a tab) between fields, told apart by the header line. In a template, ``{column}``
is that column's value in the row; ``{{`` and ``}}`` are literal braces. A row's own
``message`` column, when not empty, is its text as written (no placeholders); its ``media``
and ``reference_number`` columns likewise win over the campaign's.

An ``.xlsx`` workbook (told by its zip signature) is read the same way from its first sheet:
the first row names the columns, every value is taken as text (a whole number without
``.0``, a date or time in ISO 8601), so the same placeholders and columns apply.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

from pushgate.core.errors import ApiError, Code
from pushgate.core.push import PushBody, PushEntry
from pushgate.core.schedule import send_at_instant

MESSAGE_COLUMN = "message"
MEDIA_COLUMN = "media"
REFERENCE_COLUMN = "reference_number"
DEFAULT_NUMBER_COLUMN = "number"
#: What a rejects file adds to the file's own columns (those it lacks).
REJECT_COLUMNS = ("row", "code", "reason")

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


@dataclass(frozen=True, slots=True)
class Table:
    """A CSV's header and rows; ``rows[i]`` is the file's record ``i + 2`` (the header is
    record 1): what a rejects file and an answer call its ``row``."""

    columns: list[str]
    rows: list[dict[str, str]]


@dataclass(frozen=True, slots=True)
class Options:
    """What shapes the messages of a campaign (and so its idempotency keys)."""

    application: str
    # The channel it goes through, when the caller chose one (a key per channel).
    channel_id: int | None = None
    message: str | None = None
    number_column: str = DEFAULT_NUMBER_COLUMN
    priority: int = 0
    media: str | None = None
    # When to send (a push body's ``send_at``, as the caller wrote it; None: now). It is part
    # of the keys: a campaign sent at another time is another campaign.
    send_at: str | None = None


@dataclass(frozen=True, slots=True)
class RowRefusal:
    row: int         # index in ``Table.rows``
    number: str
    code: Code
    message: str


@dataclass(slots=True)
class Chunk:
    """One push of the campaign: its body, and the ``Table.rows`` index of each entry."""

    index: int
    body: PushBody
    rows: list[int]
    key: str = ""


@dataclass(slots=True)
class Campaign:
    table: Table
    chunks: list[Chunk]
    refused: list[RowRefusal] = field(default_factory=list)


#: How an .xlsx file (a zip archive) starts.
ZIP_MAGIC = b"PK\x03\x04"


def read_table(data: bytes) -> Table:
    """The CSV (or .xlsx workbook) in ``data``; ``INVALID_CSV`` when it is neither UTF-8
    text nor a workbook, or has no header row."""
    if data.startswith(ZIP_MAGIC):
        return _table(read_xlsx_records(data))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ApiError(Code.INVALID_CSV,
                       f"the file is not UTF-8 text (byte {exc.start})") from None
    if "\x00" in text:
        raise ApiError(Code.INVALID_CSV, "the file holds NUL characters: not a CSV")
    header_line = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=header_line.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        records = list(reader)
    except csv.Error as exc:
        raise ApiError(Code.INVALID_CSV, f"line {reader.line_num}: {exc}") from None
    return _table(records)


def _table(records: list[list[str]]) -> Table:
    if not records or not any(cell.strip() for cell in records[0]):
        raise ApiError(Code.INVALID_CSV, "the file has no header row")
    columns = [cell.strip() for cell in records[0]]
    seen: set[str] = set()
    for name in columns:
        if name in seen and name:
            raise ApiError(Code.INVALID_CSV, f"the column {name!r} appears twice")
        seen.add(name)
    rows = [{name: (record[i].strip() if i < len(record) else "")
             for i, name in enumerate(columns) if name}
            for record in records[1:] if any(cell.strip() for cell in record)]
    return Table(columns=[c for c in columns if c], rows=rows)


def read_xlsx_records(data: bytes) -> list[list[str]]:
    """The first sheet of the workbook in ``data``, row by row, every value as text (read in
    memory, in openpyxl's read-only mode); ``INVALID_CSV`` when it is not a workbook."""
    import zipfile

    import openpyxl  # only a workbook's campaign pays for the import

    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ApiError(Code.INVALID_CSV, f"the file is not an .xlsx workbook ({exc})") from None
    try:
        if not book.worksheets:
            raise ApiError(Code.INVALID_CSV, "the workbook has no sheet")
        return [[_cell_text(value) for value in row]
                for row in book.worksheets[0].iter_rows(values_only=True)]
    finally:
        book.close()


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime.datetime):
        return (value.date().isoformat() if value.time() == datetime.time()
                else value.isoformat())
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value)


def placeholders(template: str) -> list[str]:
    """The column names ``template`` refers to, in order; ``INVALID_FIELD`` for a lone
    brace."""
    names: list[str] = []
    for match in _PLACEHOLDER.finditer(template):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        if match.group(1) is None:
            raise ApiError(Code.INVALID_FIELD,
                           f"a lone {token!r} in the message (write {token * 2} for a brace)")
        names.append(match.group(1).strip())
    return names


def render(template: str, row: dict[str, str]) -> str:
    """``template`` with each ``{column}`` replaced by the row's value."""
    def fill(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        return row.get((match.group(1) or "").strip(), "")
    return _PLACEHOLDER.sub(fill, template)


def plan_campaign(data: bytes, options: Options, max_recipients: int) -> Campaign:
    """The campaign of the CSV ``data``: refuses (``ApiError``) a missing number column and a
    placeholder naming no column before anything is sent; rows without a number are refused
    here, the others cut into push bodies of at most ``max_recipients`` entries, in file
    order, each with its idempotency key."""
    table = read_table(data)
    if options.number_column not in table.columns:
        raise ApiError(Code.NUMBER_COLUMN_MISSING,
                       f"no column {options.number_column!r} in the file (its columns: "
                       f"{', '.join(table.columns)})")
    template = options.message or ""
    missing = [name for name in placeholders(template) if name not in table.columns]
    if missing:
        raise ApiError(Code.UNKNOWN_PLACEHOLDER,
                       f"the message names {', '.join('{' + m + '}' for m in missing)}, which "
                       f"the file has no column for (its columns: {', '.join(table.columns)})")
    if not template and MESSAGE_COLUMN not in table.columns and not options.media \
            and MEDIA_COLUMN not in table.columns:
        raise ApiError(Code.INVALID_FIELD,
                       "no message: give one, or a `message` or `media` column in the file")
    campaign = Campaign(table=table, chunks=[])
    entries: list[tuple[int, PushEntry]] = []
    for index, row in enumerate(table.rows):
        number = row.get(options.number_column, "")
        if not number:
            campaign.refused.append(RowRefusal(index, number, Code.INVALID_NUMBER,
                                               f"no number in column {options.number_column!r}"))
            continue
        text = row.get(MESSAGE_COLUMN) or render(template, row)
        entries.append((index, PushEntry(
            number=number, message=text or None, media=row.get(MEDIA_COLUMN) or None,
            reference_number=row.get(REFERENCE_COLUMN) or None)))
    digest = hashlib.sha256(data).hexdigest()
    for start in range(0, len(entries), max_recipients):
        part = entries[start:start + max_recipients]
        chunk_index = len(campaign.chunks)
        body = PushBody(application=options.application, channel_id=options.channel_id,
                        globalmedia=options.media, send_at=options.send_at,
                        priority=options.priority, data=[entry for _, entry in part])
        campaign.chunks.append(Chunk(index=chunk_index, body=body,
                                     rows=[row for row, _ in part],
                                     key=chunk_key(digest, options, max_recipients,
                                                   chunk_index)))
    return campaign


def chunk_key(digest: str, options: Options, max_recipients: int, index: int) -> str:
    """The idempotency key of a campaign's push ``index``: the same file, options and chunk
    size give the same keys, so a rerun replays the pushes accepted before. The chunk size
    counts: with another, push ``index`` holds other rows."""
    shaping_items: list[Any] = [options.application, options.channel_id, options.message,
                                options.number_column, options.priority, options.media,
                                max_recipients]
    if options.send_at is not None:
        # The instant, not its spelling: `09:00+05:30` and `03:30Z` are one campaign. (Without
        # a send_at the keys stay those of the campaigns sent before scheduling existed.)
        shaping_items.append(send_at_instant(options.send_at))
    shaping = json.dumps(shaping_items)
    options_digest = hashlib.sha256(shaping.encode()).hexdigest()[:32]
    return f"csv:{digest[:32]}:{options_digest}:{index}"


def reject_records(table: Table, refused: list[tuple[int, dict[str, Any]]]) -> list[list[Any]]:
    """The rejects file's records (header first): each refused row as the file had it, with
    its row number, code and reason; ``refused`` holds (``Table.rows`` index, the answer's
    item for the row)."""
    extra = [c for c in REJECT_COLUMNS if c not in table.columns]
    records: list[list[Any]] = [[*table.columns, *extra]]
    for index, item in refused:
        row = table.rows[index]
        values = {"row": item["row"], "code": item["status"], "reason": item["message"]}
        records.append([*(row.get(c, "") for c in table.columns), *(values[c] for c in extra)])
    return records
