"""``.xlsx`` campaigns (issue 19): a workbook's first sheet read as a CSV would be, values as
text (whole numbers without ``.0``, dates in ISO 8601), the same placeholder rules."""

from __future__ import annotations

import datetime
import io

import openpyxl
import pytest

from pushgate.core.campaign import Options, plan_campaign, read_table
from pushgate.core.errors import ApiError, Code


def workbook(rows: list[list[object]], second: list[list[object]] | None = None) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    if second is not None:
        other = book.create_sheet("other")
        for row in second:
            other.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_first_sheet_values_as_text() -> None:
    data = workbook([["number", "name", "due", "amount", "paid"],
                     [919876500001, "Ana", datetime.date(2026, 12, 24), 12.5, True],
                     [None, None, None, None, None],
                     ["919876500002", "Bo", datetime.datetime(2026, 12, 6, 9, 30), 7.0, False]],
                    second=[["number"], [1]])
    table = read_table(data)
    assert table.columns == ["number", "name", "due", "amount", "paid"]
    assert table.rows == [
        {"number": "919876500001", "name": "Ana", "due": "2026-12-24", "amount": "12.5",
         "paid": "TRUE"},
        {"number": "919876500002", "name": "Bo", "due": "2026-12-06T09:30:00", "amount": "7",
         "paid": "FALSE"}]


def test_placeholders_and_columns_as_for_a_csv() -> None:
    data = workbook([["number", "name"], [919876500001, "Ana"]])
    campaign = plan_campaign(data, Options(application="1", message="Hi {name}"), 10)
    assert campaign.chunks[0].body.data is not None
    assert [e.message for e in campaign.chunks[0].body.data] == ["Hi Ana"]
    with pytest.raises(ApiError) as missing:
        plan_campaign(data, Options(application="1", message="Hi {who}"), 10)
    assert missing.value.code is Code.UNKNOWN_PLACEHOLDER
    with pytest.raises(ApiError) as column:
        plan_campaign(data, Options(application="1", message="x", number_column="tel"), 10)
    assert column.value.code is Code.NUMBER_COLUMN_MISSING


def test_a_broken_workbook_is_refused() -> None:
    data = workbook([["number"], [1]])
    with pytest.raises(ApiError) as broken:
        read_table(data[:200])
    assert broken.value.code is Code.INVALID_CSV
    with pytest.raises(ApiError) as empty:
        read_table(workbook([]))
    assert empty.value.code is Code.INVALID_CSV
