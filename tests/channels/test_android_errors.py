"""How a phone's report of a failed send is read: the result code inside the text the app
writes ("Send result: RESULT_… (why)"), for every error the app can report."""

from __future__ import annotations

import pytest

from pushgate.channels.android import (
    FAULT_OUTCOMES,
    LIMIT_CODES,
    PERMANENT,
    PHONE_TROUBLE,
    TRANSIENT,
    PhoneFault,
    read_app_error,
)
from pushgate.core.models import Outcome
from tests.fakes.android_phone import APP_RESULT_TEXTS, app_error

SETS = {PhoneFault.LIMIT: LIMIT_CODES, PhoneFault.PHONE: PHONE_TROUBLE,
        PhoneFault.TRANSIENT: TRANSIENT, PhoneFault.PERMANENT: PERMANENT}


@pytest.mark.parametrize("code", sorted(APP_RESULT_TEXTS))
def test_every_code_the_app_reports_is_read_from_its_text(code: str) -> None:
    text = app_error(code)
    read = read_app_error(text)
    assert (read.code, read.text) == (code, text)
    # Classified on purpose: in exactly one of the four sets, and read as that set says.
    homes = [fault for fault, codes in SETS.items() if code in codes]
    assert homes == [read.fault], (code, homes)
    assert read_app_error(code).fault is read.fault   # the bare code, as older clients send


def test_the_app_texts_that_matter_most() -> None:
    limit = read_app_error("Send result: RESULT_ERROR_LIMIT_EXCEEDED (Failed because we reached"
                           " the sending queue limit)")
    assert (limit.code, limit.fault) == ("RESULT_ERROR_LIMIT_EXCEEDED", PhoneFault.LIMIT)
    assert read_app_error("Send result: RESULT_ERROR_NO_SERVICE (Failed because service is "
                          "currently unavailable)").fault is PhoneFault.PHONE
    assert read_app_error("Send result: RESULT_RIL_SMS_SEND_FAIL_RETRY (The radio failed to "
                          "send the SMS and needs to retry)").fault is PhoneFault.TRANSIENT
    assert read_app_error("Send result: RESULT_ERROR_GENERIC_FAILURE (Generic failure cause)"
                          ).fault is PhoneFault.PERMANENT


@pytest.mark.parametrize(("text", "fault"), [
    # The app's own refusals, before Android is asked (MessagesService.sendMessage/sendSMS).
    ("Can't send message: No SIMs found", PhoneFault.PHONE),
    ("Can't send message: SIM 2 not found", PhoneFault.PHONE),
    ("Can't send message: SIM selection requires READ_PHONE_STATE permission", PhoneFault.PHONE),
    ("TTL expired", PhoneFault.PERMANENT),
    ("sendSMS: Invalid phone number", PhoneFault.PERMANENT),
    ("Unknown error code: 42.", PhoneFault.PERMANENT),
    ("Delivery result from SC +919800000000: 96", PhoneFault.PERMANENT),
    ("", PhoneFault.PERMANENT),
    (None, PhoneFault.PERMANENT),
])
def test_texts_without_a_result_code(text: str | None, fault: PhoneFault) -> None:
    read = read_app_error(text)
    assert (read.code, read.fault) == (None, fault)


def test_a_device_id_never_reads_as_a_command_line_option() -> None:
    from pushgate.channels.android.phones import new_device_id

    ids = [new_device_id() for _ in range(3000)]
    assert all(len(i) == 21 and i[0].isalnum() for i in ids)
    assert len(set(ids)) == len(ids)


def test_every_fault_has_an_outcome() -> None:
    # The phone's own trouble re-queues without an attempt; only a permanent fault refunds.
    assert FAULT_OUTCOMES == {PhoneFault.LIMIT: Outcome.DEFER, PhoneFault.PHONE: Outcome.DEFER,
                              PhoneFault.TRANSIENT: Outcome.RETRY,
                              PhoneFault.PERMANENT: Outcome.FAILED}
