"""MC's send logging data extensions (reference §2.8): what each send carried, written at send time.

The sandbox account holds two, as if an admin had created them from MC's templates and added a Text
field ``NotificationId``; their customer keys equal their names:

``SendLog`` (email)
    the template's ``JobID``, ``ListID``, ``BatchID``, ``SubID``, ``TriggeredSendID``, ``ErrorCode``,
    plus the custom fields ``SubscriberKey``, ``EmailAddress``, ``NotificationId``, ``LogDate``.
    ``JobID``/``BatchID`` equal the ``SendID``/``BatchID`` of the send's tracking events (tracking.py),
    so the two can be joined as MC documents.
``SMSSendLog`` (MobileConnect)
    ``MobileNumber``, ``SubscriberKey``, ``MessageID`` (the message's API key), ``TokenID``,
    ``ErrorCode``, ``NotificationId``, ``LogDate``. The reference (§2.8) names the ``SMSSendLog``
    template but not its fields: these are the sandbox's assumption, ``TokenID`` above all, so the
    service reads only ``NotificationId`` and ``ErrorCode`` here (and follows no delivery of an SMS
    it settled from this log: senders.py, FOUND_IN_SEND_LOG_SMS).

Rules, as MC's:

- A row is written at send time, ``Config.send_log_delay`` seconds (``--send-log-delay``) after the
  API accepted the send (sends.py and sms.py call in then): MC logs at send time, not at acceptance.
  Every classic triggered send (REST ``messageDefinitionSends``, SOAP ``Create TriggeredSend``) MC
  attempted is logged, one it stopped at send time (a NotSent) with its ``ErrorCode``, and every
  MobileConnect recipient delivered. A send refused synchronously writes no row; a Transactional
  Messaging API send (tracked by messageKey) is not logged; nothing is logged retroactively; a reset
  drops the logs and the sends still waiting for their send time.
- A field listed in ``from_attributes`` (``NotificationId``) takes the value of the send attribute
  with the same name, compared case-insensitively; it is empty when the send carries none.
- Read them with SOAP Retrieve ``DataExtensionObject[SendLog]`` (by name or customer key, see
  soap.py); ``GET /_sandbox/send-log`` shows both.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .state import Message, State, mc_date_string, utcnow
from .templates import EmailDefinition

SEND_LOG = "SendLog"
SMS_SEND_LOG = "SMSSendLog"
NOTIFICATION_ID = "NotificationId"
LIST_ID = 69238  # the account's "All Subscribers" list
LOGGED_APIS = frozenset({"rest", "soap", "sms"})  # not "transactional"

Row = dict[str, Any]


@dataclass(frozen=True)
class DataExtension:
    name: str
    fields: tuple[str, ...]  # in the data extension's field order
    from_attributes: tuple[str, ...]  # custom fields filled from a send attribute of the same name

    @property
    def customer_key(self) -> str:
        return self.name

    def field(self, name: str) -> str | None:
        """The field's own spelling: MC matches data extension field names case-insensitively."""
        low = name.lower()
        return next((f for f in self.fields if f.lower() == low), None)


DATA_EXTENSIONS: dict[str, DataExtension] = {
    de.name: de
    for de in (
        DataExtension(
            SEND_LOG,
            (
                "JobID",
                "ListID",
                "BatchID",
                "SubID",
                "TriggeredSendID",
                "ErrorCode",
                "SubscriberKey",
                "EmailAddress",
                NOTIFICATION_ID,
                "LogDate",
            ),
            (NOTIFICATION_ID,),
        ),
        DataExtension(
            SMS_SEND_LOG,
            (
                "MobileNumber",
                "SubscriberKey",
                "MessageID",
                "TokenID",
                "ErrorCode",
                NOTIFICATION_ID,
                "LogDate",
            ),
            (NOTIFICATION_ID,),
        ),
    )
}


def data_extension(ref: str) -> DataExtension | None:
    """Look a send log up by name or customer key (case-insensitive, as MC's)."""
    low = ref.strip().lower()
    return next(
        (de for de in DATA_EXTENSIONS.values() if low in (de.name.lower(), de.customer_key.lower())), None
    )


def rows(state: State, de: DataExtension) -> list[Row]:
    return list(state.send_logs.get(de.name, ()))


def value_text(value: Any) -> str:
    """A field's value as MC returns it: text, dates in MC's ``M/D/YYYY h:mm:ss AM`` shape."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return mc_date_string(value) or ""
    return str(value)


def log_email(
    state: State,
    msg: Message,
    definition: EmailDefinition,
    subscriber_id: int,
    job_id: int,
    batch_id: int,
    error_code: int | None = None,
) -> None:
    if msg.api not in LOGGED_APIS:
        return
    row: Row = {
        "JobID": job_id,
        "ListID": LIST_ID,
        "BatchID": batch_id,
        "SubID": subscriber_id,
        "TriggeredSendID": definition.guid,
        "ErrorCode": error_code,
        "SubscriberKey": msg.subscriber_key,
        "EmailAddress": msg.to,
    }
    _write(state, DATA_EXTENSIONS[SEND_LOG], row, msg.attributes)


def log_sms(state: State, msg: Message, token_id: str) -> None:
    if msg.api not in LOGGED_APIS:
        return
    row: Row = {
        "MobileNumber": msg.to,
        "SubscriberKey": msg.subscriber_key,
        "MessageID": msg.definition_key,
        "TokenID": token_id,
        "ErrorCode": None,
    }
    _write(state, DATA_EXTENSIONS[SMS_SEND_LOG], row, msg.attributes)


def _write(state: State, de: DataExtension, row: Row, attributes: Mapping[str, str]) -> None:
    lowered = {k.lower(): v for k, v in attributes.items()}
    for name in de.from_attributes:
        row[name] = lowered.get(name.lower(), "")
    row["LogDate"] = utcnow()
    log = state.send_logs.get(de.name)
    if log is None:
        log = state.send_logs[de.name] = deque(maxlen=max(1, state.config.message_cap))
    log.append({f: row.get(f) for f in de.fields})
