"""OpenAPI descriptions of routes that read their body by hand (for speed)."""

from __future__ import annotations

DESCRIPTION = """
pushgate speaks the Picky Assist Push API v2: `POST /api/v2/push` with a JSON body carrying
`token`, `application` and `data[]`. Every answer has a numeric `status` (100 = accepted) and a
`message`; see docs/error-codes.md for every code. The token may also be sent as
`Authorization: Bearer <token>`. Picky's endpoints (`push`, `delivery-report`,
`device-status`, `device-action`) also answer under Picky's older base URL, `/app/api/v2/`, and
`device-status` at `/app/api/v1/device-status`; this document lists each once.
"""

_ENTRY = {
    "type": "object",
    "properties": {
        "number": {"type": ["string", "integer"],
                   "description": "Digits with country code, no + and no leading 0",
                   "example": "919876543210"},
        "message": {"type": ["string", "integer"], "description": "Text for this number (wins over "
                    "globalmessage when non-empty)"},
        "media": {"type": "string", "format": "uri", "description": "Media URL for this number"},
        "reference_number": {"type": ["string", "integer"],
                             "description": "Your value, echoed in reports (≤ 255 chars)"},
        "template_message": {"type": "array", "items": {"type": ["string", "number"]},
                             "description": "Template sends: this number's variable values, "
                             "in the template's order (wins over template_globalmessage)"},
        "language": {"type": ["string", "integer"],
                     "description": "Template sends: language override"},
        "template_header": {"type": ["string", "integer"], "maxLength": 60,
                            "description": "Template sends: header override"},
    },
    "required": ["number"],
}

PUSH_REQUEST = {
    "type": "object",
    "properties": {
        "token": {"type": ["string", "integer"],
                  "description": "Project API token (or Bearer header)"},
        "application": {"type": ["string", "integer"],
                        "description": "Picky application code (1, 2, 3, 4, 5, 8, 10, 101, "
                        "121): the project's channel for it (of several, the unpaused one with "
                        "the lowest id). Never a channel id", "example": "1"},
        "channel_id": {"type": ["string", "integer"],
                       "description": "pushgate extension: this channel of the project, by "
                       "id (`pushgate channel list`). With `application` too, the two must "
                       "agree (else 422)"},
        "globalmessage": {"type": ["string", "integer"],
                          "description": "Text for entries without message"},
        "globalmedia": {"type": "string", "format": "uri"},
        "globalmedia_code": {"type": "string", "description": "Media as base64"},
        "priority": {"type": ["string", "integer"], "enum": [0, 1, "0", "1"],
                     "description": "0 low (default), 1 high; `\"priority \"` also accepted"},
        "data": {"type": "array", "items": _ENTRY, "minItems": 1},
        "action": {"type": ["string", "integer"], "enum": [0, 1, "0", "1"],
                   "description": "1: Picky's WhatsApp number filter: nothing is sent, each "
                   "number is checked and answered by the event webhook (event_id 2)"},
        "template_id": {"type": ["string", "integer"],
                        "description": "An approved WhatsApp template (official channels: "
                        "application 8, 101, 121); the message is that template"},
        "language": {"type": ["string", "integer"],
                     "description": "The template's language, e.g. en"},
        "template_globalmessage": {"type": "array", "items": {"type": ["string", "number"]},
                                   "description": "Variable values for every entry"},
        "template_header": {"type": ["string", "integer"], "maxLength": 60,
                            "description": "Header text (or a document's name)"},
        "reference_number": {"type": ["string", "integer"],
                             "description": "For every entry without its own"},
        "send_at": {"type": ["string", "number"],
                    "example": "2026-12-24T09:00:00+05:30",
                    "description": "pushgate's own: send at this time (ISO 8601 with an offset, "
                    "or unix seconds); charged now, pending until then; a past time sends "
                    "now, more than PUSHGATE_MAX_SCHEDULE_SECONDS ahead is 424"},
    },
    "required": ["data"],
    "anyOf": [{"required": ["application"]}, {"required": ["channel_id"]}],
}

PUSH_RESPONSE = {
    "type": "object",
    "properties": {
        "status": {"type": "integer", "example": 100},
        "push_id": {"type": "string", "example": "7478630"},
        "message": {"type": "string", "example": "Success"},
        "data": {"type": "array", "items": {
            "type": "object",
            "properties": {
                "msg_id": {"type": "string"},
                "number": {"type": "string"},
                "credit": {"type": "string", "example": "0.005"},
                "status": {"type": "integer", "description": "Only on refused entries"},
                "message": {"type": "string", "description": "Only on refused entries"},
                "duplicate_of": {"type": "string"},
            },
        }},
        "accepted": {"type": "integer"},
        "rejected": {"type": "integer"},
        "credit_total": {"type": "string"},
        "balance": {"type": "string"},
    },
}

ERROR = {
    "type": "object",
    "properties": {"status": {"type": "integer", "example": 401},
                   "message": {"type": "string", "example": "Authentication Failed"}},
}

_ERRORS = {str(code): {"description": "Refused; see docs/error-codes.md",
                       "content": {"application/json": {"schema": ERROR}}}
           for code in (400, 401, 402, 403, 413, 422, 429, 503)}

PUSH = {
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": PUSH_REQUEST},
        "application/x-www-form-urlencoded": {"schema": {
            "type": "object", "properties": {"data": {"type": "string",
                                                      "description": "The JSON body as text"}}}},
    }},
    "responses": {"200": {"description": "Accepted (status 100)",
                          "content": {"application/json": {"schema": PUSH_RESPONSE}}},
                  **_ERRORS},
}

TOKEN_PUSH_ID = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object",
        "properties": {"token": {"type": ["string", "integer"]},
                       "push_id": {"type": ["string", "integer"]}},
        "required": ["push_id"],
    }}}},
    "responses": {"200": {"description": "Per-message statuses: 0 pending, 4 submitted, "
                          "1 delivered, 3 read, 2 failed, 5 refunded"}, **_ERRORS},
}

PUSH_CANCEL = {
    "requestBody": TOKEN_PUSH_ID["requestBody"],
    "responses": {"200": {"description": "`cancelled` messages and the credits `refunded`; "
                          "`in_flight`, `sent` and `already_ended` count the messages left "
                          "alone"}, **_ERRORS},
}

PUSH_CSV = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "properties": {
            "file": {"type": "string", "format": "binary",
                     "description": "UTF-8 CSV (BOM optional, `,` or `;`) or an .xlsx "
                                    "workbook (its first sheet), a header row"},
            "token": {"type": "string"},
            "application": {"type": "string"},
            "channel_id": {"type": "string"},
            "message": {"type": "string",
                        "description": "template: `{column}` is the row's value"},
            "number_column": {"type": "string", "default": "number"},
            "priority": {"type": "string", "enum": ["0", "1"]},
            "media": {"type": "string", "format": "uri"},
            "send_at": {"type": "string",
                        "description": "send every push at this time: ISO 8601 with an "
                                       "offset or unix seconds (`at` is taken too)"}},
        "required": ["file"],
    }}}},
    "responses": {"200": {"description": "`push_ids` of the pushes made (one per "
                          "PUSHGATE_MAX_RECIPIENTS rows); `data` one item per row of the "
                          "file, with its `row` number; the same upload again sends nothing "
                          "twice"}, **_ERRORS},
}

SANDBOX_INBOUND = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object",
        "properties": {"token": {"type": ["string", "integer"]},
                       "application": {"type": ["string", "integer"]},
                       "number": {"type": ["string", "integer"]},
                       "message": {"type": ["string", "integer"]},
                       "media": {"type": "string", "format": "uri"},
                       "name": {"type": "string"}},
        "required": ["application", "number"],
    }}}},
    "responses": {"200": {"description": "Recorded; it reaches the project's incoming webhook "
                          "like a message from a real channel's provider"}, **_ERRORS},
}
