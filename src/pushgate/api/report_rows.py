"""A push's messages as report rows, read page by page: what ``pushgate report`` writes as a
table, CSV or JSON and the dashboard's CSV export streams (one shape for both)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable
from typing import Any

from pushgate.core.lifecycle import ERROR_STATES
from pushgate.core.records import MessageRecord, PushRecord
from pushgate.store.base import Store

# Rows read from the store at a time: what a report holds in memory, however large the push.
REPORT_CHUNK = 500

COLUMNS = ("msg_id", "number", "status", "state", "error_code", "error_message",
           "accepted_at", "updated_at", "reference_number")


def report_row(message: MessageRecord, push: PushRecord) -> dict[str, Any]:
    """One message of a report: Picky's status with pushgate's state name, the outcome's
    error, and pushgate's own time format."""
    # Imported here: `pushgate report` starts without Starlette.
    from pushgate.api.answers import iso_time

    # Errors only for a failed or refunded message, as in the delivery report.
    failed = message.state in ERROR_STATES
    return {
        "msg_id": message.id, "number": message.number, "status": message.status,
        "state": message.state.value,
        "error_code": message.error_code if failed else None,
        "error_message": (message.error_message or "") if failed else "",
        "accepted_at": iso_time(push.created_at), "updated_at": iso_time(message.updated_at),
        "reference_number": message.reference,
    }


async def stream_report(store: Store, push: PushRecord, project_id: int,
                        write: Callable[[list[dict[str, Any]]], None],
                        chunk: int = REPORT_CHUNK) -> int:
    """Hand ``write`` the push's rows ``chunk`` at a time, as the store pages them; returns
    how many."""
    count = 0
    async for messages in store.iter_push_messages(project_id, push.id, chunk):
        write([report_row(message, push) for message in messages])
        count += len(messages)
    return count


async def csv_chunks(store: Store, push: PushRecord, project_id: int,
                     chunk: int = REPORT_CHUNK) -> AsyncIterator[str]:
    """The report as CSV text, the header then one piece per page of rows."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    async for messages in store.iter_push_messages(project_id, push.id, chunk):
        writer.writerows(report_row(message, push) for message in messages)
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    if out.tell():
        yield out.getvalue()
