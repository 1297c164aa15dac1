"""SMPP v3.4 connector (Picky application 3, SMS): transceiver binds held open to an SMSC.

Sending
    The text is cut by ``core.segments.split_segments`` — the very parts whose count was charged
    at accept — and each part is one submit_sm: GSM-7 (data_coding 0, one octet per septet,
    extension characters as ESC + code) when the whole text is in the GSM 03.38 alphabet, else
    UCS-2 (data_coding 8, UTF-16BE). Several parts carry the concatenation UDH
    ``05 00 03 ref total seq`` with esm_class 0x40. The parts of one message go one after another;
    messages go concurrently, each bind keeping up to ``window`` submit_sm unanswered. Every
    part's message_id, with its other-base spelling (receipts may name either), is returned in
    ``provider_refs``. A channel paced at ``--rate`` R (``rate_per_second``) sends at most R
    submit_sm — parts, as the SMSC counts — in any window of one second, idle or not
    (``SubmitRate``); the dispatcher's own pacing counts messages.

Sessions
    ``binds`` bind_transceiver sessions are opened in ``start()``; an enquire_link goes out after
    ``enquire_link_seconds`` of silence (the SMSC's are answered); a session that drops, or whose
    enquire_link goes unanswered, is bound again with exponential back-off; ``stop()`` unbinds.
    While no bind is up, sends wait up to ``bind_wait_seconds`` and then defer. While the SMSC
    refuses the credentials (0x0D/0x0E/0x0F), sends ask the dispatcher to pause the channel.
    ESME_RTHROTTLED / ESME_RMSGQFUL pause the bind that got them. One burst gives one pause:
    answers to submits sent before the current pause began say nothing new; a throttle to a
    submit sent after it began doubles it (up to ``throttle_backoff_max_seconds``), and a
    success after it began ends the doubling. Each submit carries the number of pauses begun
    when it went out, so the rule does not depend on a clock (uvloop's is cached per loop
    iteration, which made every answer of one burst look "later" and doubled the pause five
    times in one millisecond). A throttled message is not a failed attempt: it goes back to
    the queue for the pause (``Outcome.DEFER``), never counted against the retry limit.

Receipts and inbound SMS
    A deliver_sm on any bind becomes a ``StatusUpdate`` (receipt) or an ``InboundMessage``
    (mobile-originated), is handed to ``self.sink`` — in batches: one store write covers all that
    arrived meanwhile — and is acknowledged (deliver_sm_resp) only once the sink has made it
    durable. If the sink fails, the SMSC is answered ESME_RX_T_APPN and delivers it again later.

    A user's SMS in parts (a UDH with an 8-bit or 16-bit concatenation reference, or the SAR
    TLVs) is stored part by part through the sink (acknowledged once its part is durable) and
    forwarded once, whole, when its last part is in; parts stored by an earlier process join
    too. Its text is the parts' octets joined, then decoded by their data_coding (so a UCS-2
    character or a GSM escape split between parts survives). A message still missing parts
    ``concat_timeout_seconds`` after its first arrived is forwarded with what arrived, marked
    incomplete (``raw``: ``incomplete``, ``parts_received``, ``parts_total``).

    Repeats: the same text from the same number is a new message, each forwarded. The only
    deliver_sm dropped is the SMSC's re-delivery of one we stored but whose deliver_sm_resp it
    may not have had: the SMSC has surely read our answer once it answers a request we wrote
    after it (TCP keeps order; an enquire_link goes out ``MO_CONFIRM_SECONDS`` after an answer
    when no other request does); a session that ends before that leaves the answer in doubt,
    and for ``MO_REDELIVERY_SECONDS`` an identical deliver_sm (same sender, destination,
    esm_class, data_coding, octets and TLVs — the sequence number differs on a new session)
    is taken as that re-delivery: a whole message is recorded under the first one's id (the
    store keeps one), a part already stored is acknowledged and dropped. Limits: the doubt is
    kept in memory, so a re-delivery after this process died between storing and answering is
    forwarded again; a user who sends the very same text again within those minutes, after a
    session dropped in the second between our answer and its confirmation, is heard once.

Why the PDU layer is our own (``smpp.pdu``, ``struct``): of the Python SMPP libraries, smpp34
1.5 (asyncio, Rust core) acknowledges each deliver_sm inside its core before Python reads it (the
SMSC had its deliver_sm_resp while the client had not taken the event), so a receipt could be
acknowledged and then lost in a crash; smpplib is synchronous (threads); aiosmpplib sends
fire-and-forget through a broker, segments with its own splitter (SAR TLVs) rather than the
parts we charged for, keeps no submit window and correlates in memory; naz is unmaintained;
smppy is a server; jasmin is a whole gateway. An ESME needs only a handful of PDUs.

Config keys (``channel add --config``): ``host`` and ``system_id`` (required), ``port`` (2775),
``password``, ``system_type`` (""), ``service_type`` (""), ``source_addr`` (sender; "" lets the
SMSC choose), ``source_ton``/``source_npi`` (5/0 for an alphanumeric sender, 1/1 for digits),
``dest_ton``/``dest_npi`` (1/1), ``binds`` (1), ``window`` (10), ``enquire_link_seconds`` (30),
``response_timeout_seconds`` (10), ``registered_delivery`` (1: receipt on final outcome),
``bind_wait_seconds`` (10), ``rebind_min_seconds``/``rebind_max_seconds`` (1/60),
``throttle_backoff_seconds``/``throttle_backoff_max_seconds`` (1/30),
``concat_timeout_seconds`` (300: how long a user's multi-part SMS waits for its missing parts).

Modules: ``config`` (``SmppConfig``, tuning constants), ``pdu`` (the PDU codec), ``receipts``
(deliver_sm → receipts and users' messages), ``bind`` (one session: window, keep-alive, re-bind,
throttle pauses), ``channel`` (``SmppChannel``).
"""

from pushgate.channels.smpp.channel import SmppChannel
from pushgate.channels.smpp.config import SmppConfig
from pushgate.channels.smpp.receipts import id_aliases, read_receipt, receipt_update

__all__ = ["SmppChannel", "SmppConfig", "id_aliases", "read_receipt", "receipt_update"]
