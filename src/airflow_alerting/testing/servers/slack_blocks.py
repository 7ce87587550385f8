"""Block Kit validation the way Slack does it: :func:`slack_block_errors`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_SLACK_MAX_BLOCKS = 50

# Known block types that are accepted without a closer look.
_SLACK_UNCHECKED_BLOCK_TYPES = frozenset({"divider", "input", "file", "rich_text", "video", "table"})


def _text_object_errors(obj: Any, ptr: str, max_len: int, *, plain_only: bool = False) -> list[str]:
    allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if not isinstance(obj, dict) or obj.get("type") not in allowed:
        return [f"failed to match all allowed schemas [json-pointer:{ptr}]"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"must be more than 0 characters [json-pointer:{ptr}/text]"]
    if len(text) > max_len:
        return [f"must be less than {max_len + 1} characters [json-pointer:{ptr}/text]"]
    return []


def _max_len_errors(obj: dict[str, Any], key: str, max_len: int, ptr: str) -> list[str]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, str):
        return [f"must be a string [json-pointer:{ptr}/{key}]"]
    if len(value) > max_len:
        return [f"must be less than {max_len + 1} characters [json-pointer:{ptr}/{key}]"]
    return []


def _element_errors(element: Any, ptr: str) -> list[str]:
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        return [f"must provide an object with a type [json-pointer:{ptr}]"]
    errors = _max_len_errors(element, "action_id", 255, ptr)
    if element["type"] == "button":
        errors += _text_object_errors(element.get("text"), f"{ptr}/text", 75, plain_only=True)
        errors += _max_len_errors(element, "value", 2000, ptr)
        errors += _max_len_errors(element, "url", 3000, ptr)
    elif element["type"] == "image":
        errors += _image_errors(element, ptr)
    return errors


def _image_errors(image: dict[str, Any], ptr: str) -> list[str]:
    errors = _max_len_errors(image, "image_url", 3000, ptr) + _max_len_errors(image, "alt_text", 2000, ptr)
    if not image.get("alt_text"):
        errors.append(f"missing required field: alt_text [json-pointer:{ptr}]")
    if not image.get("image_url") and not image.get("slack_file"):
        errors.append(f"missing required field: image_url [json-pointer:{ptr}]")
    return errors


def _list_errors(block: dict[str, Any], key: str, max_items: int, ptr: str) -> list[str] | None:
    """Errors for a required non-empty list field, or ``None`` when it is valid."""
    items = block.get(key)
    if not isinstance(items, list) or not items:
        return [f"must provide a non-empty array [json-pointer:{ptr}/{key}]"]
    if len(items) > max_items:
        return [f"no more than {max_items} items allowed [json-pointer:{ptr}/{key}]"]
    return None


def _section_errors(block: dict[str, Any], ptr: str) -> list[str]:
    if "text" not in block and "fields" not in block:
        return [f"must provide either text or fields [json-pointer:{ptr}]"]
    errors: list[str] = []
    if "text" in block:
        errors += _text_object_errors(block["text"], f"{ptr}/text", 3000)
    if "fields" in block:
        list_errors = _list_errors(block, "fields", 10, ptr)
        if list_errors is not None:
            return errors + list_errors
        for i, field_obj in enumerate(block["fields"]):
            errors += _text_object_errors(field_obj, f"{ptr}/fields/{i}", 2000)
    if "accessory" in block:
        errors += _element_errors(block["accessory"], f"{ptr}/accessory")
    return errors


def _header_errors(block: dict[str, Any], ptr: str) -> list[str]:
    return _text_object_errors(block.get("text"), f"{ptr}/text", 150, plain_only=True)


def _context_errors(block: dict[str, Any], ptr: str) -> list[str]:
    list_errors = _list_errors(block, "elements", 10, ptr)
    if list_errors is not None:
        return list_errors
    errors: list[str] = []
    for i, element in enumerate(block["elements"]):
        element_ptr = f"{ptr}/elements/{i}"
        if isinstance(element, dict) and element.get("type") == "image":
            errors += _image_errors(element, element_ptr)
        else:
            errors += _text_object_errors(element, element_ptr, 3000)
    return errors


def _actions_errors(block: dict[str, Any], ptr: str) -> list[str]:
    list_errors = _list_errors(block, "elements", 25, ptr)
    if list_errors is not None:
        return list_errors
    errors: list[str] = []
    for i, element in enumerate(block["elements"]):
        errors += _element_errors(element, f"{ptr}/elements/{i}")
    return errors


def _markdown_errors(block: dict[str, Any], ptr: str) -> list[str]:
    text = block.get("text")
    if not isinstance(text, str) or not text:
        return [f"must be more than 0 characters [json-pointer:{ptr}/text]"]
    # Slack caps the cumulative markdown of a message at 12,000 characters.
    if len(text) > 12000:
        return [f"must be less than 12001 characters [json-pointer:{ptr}/text]"]
    return []


def _image_block_errors(block: dict[str, Any], ptr: str) -> list[str]:
    return _image_errors(block, ptr)


_BLOCK_VALIDATORS: dict[str, Callable[[dict[str, Any], str], list[str]]] = {
    "section": _section_errors,
    "header": _header_errors,
    "context": _context_errors,
    "actions": _actions_errors,
    "markdown": _markdown_errors,
    "image": _image_block_errors,
}


def slack_block_errors(blocks: Any) -> list[str]:
    """Validate Block Kit blocks the way Slack does before accepting a message.

    Covers the limits alerting messages run into (block count, text lengths of sections,
    headers, fields, context and buttons, unique ``block_id``); unusual block types are
    accepted unchecked.

    :param blocks: The decoded ``blocks`` value of a message.
    :return: Slack-style error strings (``"... [json-pointer:/blocks/0/text]"``), empty if valid.
    """
    if not isinstance(blocks, list):
        return ["must provide an array [json-pointer:/blocks]"]
    if len(blocks) > _SLACK_MAX_BLOCKS:
        return [f"no more than {_SLACK_MAX_BLOCKS} items allowed [json-pointer:/blocks]"]
    errors: list[str] = []
    seen_ids: set[str] = set()
    for i, block in enumerate(blocks):
        ptr = f"/blocks/{i}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            errors.append(f"must provide an object with a type [json-pointer:{ptr}]")
            continue
        errors += _max_len_errors(block, "block_id", 255, ptr)
        block_id = block.get("block_id")
        if isinstance(block_id, str):
            if block_id in seen_ids:
                errors.append(f"duplicate block_id {block_id!r} [json-pointer:{ptr}/block_id]")
            seen_ids.add(block_id)
        validator = _BLOCK_VALIDATORS.get(block["type"])
        if validator is not None:
            errors += validator(block, ptr)
        elif block["type"] not in _SLACK_UNCHECKED_BLOCK_TYPES:
            errors.append(f"unsupported type: {block['type']} [json-pointer:{ptr}/type]")
    return errors
