"""Discord's limits on what a bot sends (messages, interaction responses, components), as the stand-in
checks them: a body over one of them is refused with 400, as Discord refuses it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class SentFile:
    filename: str
    data: bytes
    content_type: str


CONTENT_MAX = 2000
EMBEDS_MAX = 10
EMBED_TITLE_MAX = 256
EMBED_DESCRIPTION_MAX = 4096
EMBED_FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
AUTHOR_NAME_MAX = 256
EMBEDS_TOTAL_MAX = 6000  # title + description + field names and values + footer + author, over all embeds
FILES_MAX = 10
ACTION_ROWS_MAX = 5
ROW_BUTTONS_MAX = 5
CUSTOM_ID_MAX = 100
BUTTON_LABEL_MAX = 80
SELECT_OPTIONS_MAX = 25
SELECT_OPTION_MAX = 100  # label, value
SELECT_PLACEHOLDER_MAX = 150
CHOICES_MAX = 25
CHOICE_MAX = 100  # name, and a string value
MODAL_TITLE_MAX = 45
TEXT_INPUT_LABEL_MAX = 45
UPLOAD_LIMIT = 25 * 1024 * 1024  # the payloads' attachment_size_limit


def _length(problems: list[str], where: str, text: Any, maximum: int, *, required: bool = False) -> int:
    text = "" if text is None else str(text)
    if len(text) > maximum:
        problems.append(f"{where} has {len(text)} characters; the limit is {maximum}")
    if required and not text.strip():
        problems.append(f"{where} is empty")
    return len(text)


def _component_problems(problems: list[str], rows: list[dict], where: str) -> None:
    if len(rows) > ACTION_ROWS_MAX:
        problems.append(f"{where} has {len(rows)} action rows; the limit is {ACTION_ROWS_MAX}")
    for r, row in enumerate(rows):
        inner = row.get("components") or ([row["component"]] if "component" in row else [])
        buttons = [c for c in inner if c.get("type") == 2]
        if len(buttons) > ROW_BUTTONS_MAX or (len(inner) > 1 and len(buttons) != len(inner)):
            problems.append(f"{where} row {r} holds {len(inner)} components: up to 5 buttons, or one menu")
        for c, component in enumerate(inner):
            at = f"{where} row {r} component {c}"
            if "custom_id" in component:
                _length(problems, f"{at} custom_id", component["custom_id"], CUSTOM_ID_MAX, required=True)
            if component.get("type") == 2:
                _length(problems, f"{at} label", component.get("label"), BUTTON_LABEL_MAX)
            elif component.get("type") == 3:
                options = component.get("options") or []
                if not 1 <= len(options) <= SELECT_OPTIONS_MAX:
                    problems.append(f"{at} has {len(options)} options; it needs 1 to {SELECT_OPTIONS_MAX}")
                for o, option in enumerate(options):
                    _length(problems, f"{at} option {o} label", option.get("label"), SELECT_OPTION_MAX, required=True)
                    _length(problems, f"{at} option {o} value", option.get("value"), SELECT_OPTION_MAX, required=True)
                _length(problems, f"{at} placeholder", component.get("placeholder"), SELECT_PLACEHOLDER_MAX)
            elif component.get("type") == 4:
                _length(problems, f"{at} label", component.get("label"), TEXT_INPUT_LABEL_MAX, required=True)


def message_problems(body: dict, files: list[SentFile] | None = None) -> list[str]:
    """What Discord would refuse in a message body (create or edit), as readable problems."""
    problems: list[str] = []
    _length(problems, "content", body.get("content"), CONTENT_MAX)
    embeds = body.get("embeds") or []
    if len(embeds) > EMBEDS_MAX:
        problems.append(f"{len(embeds)} embeds; the limit is {EMBEDS_MAX}")
    total = 0
    for e, embed in enumerate(embeds):
        at = f"embed {e}"
        total += _length(problems, f"{at} title", embed.get("title"), EMBED_TITLE_MAX)
        total += _length(problems, f"{at} description", embed.get("description"), EMBED_DESCRIPTION_MAX)
        total += _length(problems, f"{at} footer", (embed.get("footer") or {}).get("text"), FOOTER_MAX)
        total += _length(problems, f"{at} author", (embed.get("author") or {}).get("name"), AUTHOR_NAME_MAX)
        fields = embed.get("fields") or []
        if len(fields) > EMBED_FIELDS_MAX:
            problems.append(f"{at} has {len(fields)} fields; the limit is {EMBED_FIELDS_MAX}")
        for f, field_ in enumerate(fields):
            name, value = field_.get("name"), field_.get("value")
            where = f"{at} field {f} ({str(name)[:30]!r})"
            total += _length(problems, f"{where} name", name, FIELD_NAME_MAX, required=True)
            total += _length(problems, f"{where} value", value, FIELD_VALUE_MAX, required=True)
    if total > EMBEDS_TOTAL_MAX:
        problems.append(f"the embeds hold {total} characters in all; the limit is {EMBEDS_TOTAL_MAX}")
    _component_problems(problems, body.get("components") or [], "components")
    sent = len(files or []) if files else len(body.get("attachments") or [])
    if sent > FILES_MAX:
        problems.append(f"{sent} attachments; the limit is {FILES_MAX}")
    return problems


def callback_problems(body: dict, files: list[SentFile]) -> list[str]:
    """What Discord would refuse in an interaction response (a message, choices or a modal)."""
    kind, data = body.get("type"), body.get("data") or {}
    if kind in (4, 7):
        return message_problems(data, files)
    problems: list[str] = []
    if kind == 8:
        choices = data.get("choices") or []
        if len(choices) > CHOICES_MAX:
            problems.append(f"{len(choices)} autocomplete choices; the limit is {CHOICES_MAX}")
        for c, choice in enumerate(choices):
            _length(problems, f"choice {c} name", choice.get("name"), CHOICE_MAX, required=True)
            if isinstance(choice.get("value"), str):
                _length(problems, f"choice {c} value", choice["value"], CHOICE_MAX)
    elif kind == 9:
        _length(problems, "modal title", data.get("title"), MODAL_TITLE_MAX, required=True)
        _length(problems, "modal custom_id", data.get("custom_id"), CUSTOM_ID_MAX, required=True)
        _component_problems(problems, data.get("components") or [], "modal")
    return problems
