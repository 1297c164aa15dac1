"""An incoming webhook's answer read as an instant reply, as a push to the user who wrote.

Picky sends a JSON body returned by the global webhook to the user as an instant reply, and
treats an answer that is not JSON as an error; its schema is not published, so pushgate reads
the push's own keys: ``message`` (or ``globalmessage``) with ``media`` (or ``globalmedia``),
or a push-shaped ``data`` list whose entries each become one message. The reply always goes
to the number that wrote: a ``number`` in ``data`` is ignored, so an answer cannot reach
anyone else without a push call. No I/O here: the deliverer plans and accepts the push.
"""

from __future__ import annotations

import msgspec

from pushgate.core.push import PushBody, PushEntry

#: Messages one answer may send (entries of its ``data``); an answer listing more sends none.
MAX_REPLY_MESSAGES = 10
#: Replies jump the channel's queue, as a user waits for them.
REPLY_PRIORITY = 1


class _Entry(msgspec.Struct, gc=False):
    message: str | int | None = None
    media: str | None = None


class _Answer(msgspec.Struct, gc=False):
    message: str | int | None = None
    globalmessage: str | int | None = None
    media: str | None = None
    globalmedia: str | None = None
    data: list[_Entry] | None = None


_decoder = msgspec.json.Decoder(_Answer)


class NoReply(Exception):
    """Why an answer sends nothing; ``faulty`` when the answer is wrong rather than silent
    (not JSON, a field of the wrong type), which is worth a warning."""

    def __init__(self, reason: str, faulty: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.faulty = faulty


def _given(value: str | int | None) -> bool:
    return value is not None and (not isinstance(value, str) or bool(value.strip()))


def reply_push(answer: bytes, number: str) -> PushBody:
    """The push that answers ``number`` with ``answer``; ``NoReply`` says why there is none."""
    if not answer.strip():
        raise NoReply("empty answer", faulty=False)
    try:
        read = _decoder.decode(answer)
    except msgspec.ValidationError as exc:
        raise NoReply(f"answer not a reply: {exc}", faulty=True) from None
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        raise NoReply("answer not JSON", faulty=True) from None
    text = read.message if _given(read.message) else read.globalmessage
    media = read.media if _given(read.media) else read.globalmedia
    if read.data:
        if len(read.data) > MAX_REPLY_MESSAGES:
            raise NoReply(f"answer of {len(read.data)} messages, at most "
                          f"{MAX_REPLY_MESSAGES}", faulty=True)
        entries = [PushEntry(number=number, message=entry.message, media=entry.media)
                   for entry in read.data]
        if not (_given(text) or _given(media)
                or any(_given(e.message) or _given(e.media) for e in read.data)):
            raise NoReply("JSON answer with nothing to send", faulty=False)
    else:
        if not (_given(text) or _given(media)):
            raise NoReply("JSON answer with no message", faulty=False)
        entries = [PushEntry(number=number)]
    return PushBody(globalmessage=text if _given(text) else None,
                    globalmedia=media if _given(media) else None,
                    priority=REPLY_PRIORITY, data=entries)
