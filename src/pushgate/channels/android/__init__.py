"""Android phones running "SMS Gateway for Android" as a pull channel (``channel.py``: the
connector and its config; the phone protocol beside it). Importing the package registers
``AndroidChannel``, as the channel registry expects of ``pushgate.channels.android``."""

from pushgate.channels.android.channel import (
    FAULT_OUTCOMES,
    LIMIT_CODES,
    LIMIT_EXCEEDED,
    MIN_PRIVATE_TOKEN,
    PERMANENT,
    PHONE_TROUBLE,
    TRANSIENT,
    AndroidChannel,
    AppError,
    PhoneFault,
    PhoneSettings,
    read_app_error,
)

__all__ = ["FAULT_OUTCOMES", "LIMIT_CODES", "LIMIT_EXCEEDED", "MIN_PRIVATE_TOKEN", "PERMANENT",
           "PHONE_TROUBLE", "TRANSIENT", "AndroidChannel", "AppError", "PhoneFault",
           "PhoneSettings", "read_app_error"]
