"""MobileConnect subscriptions: which numbers a code's messages may reach (reference §4.1).

MC delivers a ``messageContact`` send only to numbers **Subscribed** to the message's keyword on its
code; the others are accepted in the request (202 + tokenId) but not delivered, and the delivery
status's ``count`` leaves them out (§4.2). A number becomes or stops being subscribed by:

- a send with ``Subscribe: true`` and the keyword: creates the subscription when the number has none;
  a STOPped (Unsubscribed) one stays so.
- a send with ``Resubscribe: true`` and the keyword: makes a STOPped subscription Subscribed again; it
  creates none. (The reference names Subscribe as the way to create and Resubscribe as the way to
  reset; integrations send both.)
- ``POST /sms/v1/queueMO`` (a simulated inbound text): the keyword subscribes the number (created or
  reset), a stop word (STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT) unsubscribes it from every keyword
  of the code.
- a Transactional Messaging SMS send (transactional.py): its definition adds a number with no
  subscription; a STOPped one only with ``subscriptions.resubscribe``.
"""

from __future__ import annotations

from .state import State

SUBSCRIBED = "Subscribed"
UNSUBSCRIBED = "Unsubscribed"
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})


def status(state: State, number: str, keyword: str) -> str | None:
    return state.mobile_subscriptions.get((number, keyword.upper()))


def subscribe(state: State, number: str, keyword: str, *, create: bool, reset: bool) -> None:
    current = status(state, number, keyword)
    if (current is None and create) or (current == UNSUBSCRIBED and reset):
        state.mobile_subscriptions[(number, keyword.upper())] = SUBSCRIBED


def stop(state: State, number: str, keywords: set[str]) -> None:
    for keyword in keywords:
        if status(state, number, keyword) is not None:
            state.mobile_subscriptions[(number, keyword.upper())] = UNSUBSCRIBED


def deliverable(state: State, number: str, keyword: str) -> bool:
    """Whether a ``messageContact`` send reaches the number: only one subscribed to the keyword."""
    return status(state, number, keyword) == SUBSCRIBED
