"""Which MC definition carries each message in each language: the template registry.

Data, not code: a message in a new language is a new row of `TEMPLATES` (and its definition in MC),
nothing else. The email texts live in MC, in the definitions these keys name; the SMS texts live here
because MobileConnect sends them as an override text (`Override`/`messageText`), rendered per member.

A notification keeps its logical template (`packet-drawn-drawer`, part of its notification id, the
idempotency key) and records the locale it is written in; the MC key is looked up at send time.

Locales are BCP 47 tags as members' profiles carry them (`zh-TW`, `zh-Hant-TW`, `en-US`, `en_GB`).
A member's tag falls back, first match wins:
1. the tag itself, compared case-insensitively with `_` read as `-`;
2. the tag without its script (`zh-Hant-TW` -> `zh-TW`);
3. RFC 4647 lookup: subtags dropped from the right (`en-GB` -> `en`, `zh-Hant-HK` -> `zh-Hant`),
   each also looked up in `ALIASES` (`zh-Hant` -> `zh-TW`);
4. `DEFAULT_LOCALE` (`zh-TW`): the campaign's members are in Taiwan; an unknown tag, or none, reads
   Chinese as before.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

DEFAULT_LOCALE = "zh-TW"


@dataclass(frozen=True)
class Localized:
    """One message in one language: the MC definition that sends it and, for SMS, its text.

    `sms_text` is a `str.format` template over the notification's attributes (`{GiverName}`); a
    `$` before it is the currency sign of the copy."""

    definition_key: str
    sms_text: str = ""


# (logical template, locale) -> the MC definition (and SMS text) in that language.
TEMPLATES: dict[tuple[str, str], Localized] = {
    ("packet-drawn-drawer", "zh-TW"): Localized("packet-drawn-drawer"),
    ("packet-drawn-drawer", "en"): Localized("packet-drawn-drawer-en"),
    ("packet-drawn-giver", "zh-TW"): Localized("packet-drawn-giver"),
    ("packet-drawn-giver", "en"): Localized("packet-drawn-giver-en"),
    ("packet-redeemed-giver", "zh-TW"): Localized("packet-redeemed-giver"),
    ("packet-redeemed-giver", "en"): Localized("packet-redeemed-giver-en"),
    ("packet-drawn-welcome", "zh-TW"): Localized(
        "packet-drawn-welcome",
        sms_text="{GiverName} 送你 ${Amount} 紅包！EZTABLE 訂位即可使用，祝 {DrawerName} 用餐愉快。",
    ),
    ("packet-drawn-welcome", "en"): Localized(
        "packet-drawn-welcome-en",
        sms_text="{GiverName} sent you a ${Amount} red envelope! Use it on any EZTABLE booking. "
        "Enjoy your meal, {DrawerName}.",
    ),
}

# Tags that name a supported locale under another spelling (lower case), used at steps 3 and 4 above.
ALIASES: dict[str, str] = {
    "zh-hant": "zh-TW",  # Traditional Chinese, the script Taiwan writes
    "zh": "zh-TW",
    "zh-tw": "zh-TW",
    "en": "en",
}

# Every locale some template is written in, by its lower-case spelling.
_LOCALES = {locale.lower(): locale for _, locale in TEMPLATES}


@functools.lru_cache(maxsize=1024)
def resolve_locale(tag: str | None) -> str:
    """The supported locale a member's tag falls back to (see the module's docstring)."""
    if not tag or not tag.strip():
        return DEFAULT_LOCALE
    subtags = tag.strip().replace("_", "-").lower().split("-")
    candidates = ["-".join(subtags)]
    # A script subtag is the four-letter one right after the language (`hant` of `zh-hant-tw`).
    if len(subtags) > 2 and len(subtags[1]) == 4 and subtags[1].isalpha():
        candidates.append("-".join([subtags[0], *subtags[2:]]))
    candidates += ["-".join(subtags[:n]) for n in range(len(subtags) - 1, 0, -1)]
    for candidate in candidates:
        found = _LOCALES.get(candidate) or ALIASES.get(candidate)
        if found:
            return found
    return DEFAULT_LOCALE


def localized(template: str, locale: str | None) -> Localized:
    """The message `template` in the member's language, else in the default one.

    KeyError for a template the registry does not know (the senders refuse those before asking)."""
    found = TEMPLATES.get((template, resolve_locale(locale)))
    return found if found is not None else TEMPLATES[(template, DEFAULT_LOCALE)]


class _Blank(dict[str, str]):
    """Attributes for `str.format_map`: one missing renders empty, as MC renders an unknown %%Name%%."""

    def __missing__(self, key: str) -> str:
        return ""


def render_sms(template: str, locale: str | None, attributes: dict[str, str]) -> str:
    """The SMS text of `template` in the member's language, with the notification's attributes."""
    return localized(template, locale).sms_text.format_map(_Blank(attributes))
