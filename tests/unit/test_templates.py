"""The template registry: each message in each language, and the fallback from a member's locale."""

from __future__ import annotations

import pytest

from stream_app.domain.templates import (
    DEFAULT_LOCALE,
    TEMPLATES,
    localized,
    render_sms,
    resolve_locale,
)
from stream_app.stages.senders import CHANNEL_TEMPLATES

ATTRIBUTES = {"GiverName": "TABLE", "DrawerName": "EZ", "Amount": "250", "Cashback": "100"}


@pytest.mark.parametrize(
    ("tag", "locale"),
    [
        ("zh-TW", "zh-TW"),
        ("zh-tw", "zh-TW"),
        ("zh_TW", "zh-TW"),
        ("zh-Hant-TW", "zh-TW"),  # the script dropped
        ("zh-Hant", "zh-TW"),  # Traditional Chinese is what Taiwan reads
        ("zh-Hant-HK", "zh-TW"),
        ("zh", "zh-TW"),
        ("en", "en"),
        ("EN", "en"),
        ("en-US", "en"),  # RFC 4647 lookup: the region dropped
        ("en_GB", "en"),
        ("en-Latn-US", "en"),
        ("ja-JP", "zh-TW"),  # unknown: the campaign's default
        ("x", "zh-TW"),
        ("", "zh-TW"),
        ("  ", "zh-TW"),
        (None, "zh-TW"),
    ],
)
def test_a_member_locale_falls_back_to_one_the_messages_are_written_in(tag: str | None, locale: str) -> None:
    assert resolve_locale(tag) == locale


def test_every_template_is_written_in_the_default_locale_and_english() -> None:
    templates = set().union(*CHANNEL_TEMPLATES.values())
    assert {t for t, _ in TEMPLATES} == templates
    for template in templates:
        assert (template, DEFAULT_LOCALE) in TEMPLATES and (template, "en") in TEMPLATES
    keys = [entry.definition_key for entry in TEMPLATES.values()]
    assert len(keys) == len(set(keys)), "one MC definition per template and language"
    # The SMS texts are ours (MobileConnect's override text); the email copy lives in MC.
    for (template, _), entry in TEMPLATES.items():
        assert bool(entry.sms_text) == (template in CHANNEL_TEMPLATES["sms"])


def test_the_definition_follows_the_locale_and_the_default_takes_the_rest() -> None:
    assert localized("packet-drawn-drawer", "zh-TW").definition_key == "packet-drawn-drawer"
    assert localized("packet-drawn-drawer", "en-US").definition_key == "packet-drawn-drawer-en"
    assert localized("packet-drawn-welcome", "en").definition_key == "packet-drawn-welcome-en"
    assert localized("packet-redeemed-giver", "fr").definition_key == "packet-redeemed-giver"
    assert localized("packet-drawn-giver", None).definition_key == "packet-drawn-giver"
    with pytest.raises(KeyError):
        localized("packet-exploded", "en")


def test_the_sms_is_rendered_in_the_drawer_language() -> None:
    assert render_sms("packet-drawn-welcome", "zh-TW", ATTRIBUTES) == (
        "TABLE 送你 $250 紅包！EZTABLE 訂位即可使用，祝 EZ 用餐愉快。"
    )
    assert render_sms("packet-drawn-welcome", "en", ATTRIBUTES) == (
        "TABLE sent you a $250 red envelope! Use it on any EZTABLE booking. Enjoy your meal, EZ."
    )


def test_names_with_braces_pass_through_and_a_missing_attribute_renders_empty() -> None:
    text = render_sms("packet-drawn-welcome", "en", {"GiverName": "{Amount} {0}", "DrawerName": "EZ"})
    assert text.startswith("{Amount} {0} sent you a $ red envelope!")
