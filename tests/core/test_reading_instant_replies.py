"""Reading an incoming webhook's answer as an instant reply: which answers are replies, which
are silence and which are faulty, and that the reply always names the user who wrote."""

from __future__ import annotations

import orjson
import pytest

from pushgate.core.instant_reply import MAX_REPLY_MESSAGES, REPLY_PRIORITY, NoReply, reply_push

USER = "919876543210"


def test_message_and_media_become_one_entry_for_the_writer() -> None:
    body = reply_push(orjson.dumps({"message": 42, "globalmessage": "ignored",
                                    "media": "https://cdn.example/a.jpg"}), USER)
    assert (body.globalmessage, body.globalmedia, body.priority) == (
        42, "https://cdn.example/a.jpg", REPLY_PRIORITY)
    assert [entry.number for entry in body.data or []] == [USER]


def test_a_data_list_keeps_its_texts_and_drops_its_numbers() -> None:
    body = reply_push(orjson.dumps({"globalmessage": "all", "data": [
        {"number": "910000000001", "message": "one"}, {"number": 910000000002}]}), USER)
    assert [(e.number, e.message) for e in body.data or []] == [(USER, "one"), (USER, None)]
    assert body.globalmessage == "all"


@pytest.mark.parametrize("answer, faulty", [
    (b"", False), (b"  \n", False), (b"{}", False), (b'{"message": "  "}', False),
    (b'{"data": [{"number": "1"}]}', False), (b'{"status": "ok"}', False),
    (b"OK", True), (b"[1, 2]", True), (b"null", True), (b'{"message": {"x": 1}}', True),
    (b"\xff\xfe", True), (b"[" * 5000 + b"]" * 5000, True),
    (orjson.dumps({"data": [{"message": str(i)} for i in range(MAX_REPLY_MESSAGES + 1)]}),
     True),
])
def test_answers_that_send_nothing_say_why(answer: bytes, faulty: bool) -> None:
    with pytest.raises(NoReply) as caught:
        reply_push(answer, USER)
    assert caught.value.faulty is faulty and caught.value.reason
