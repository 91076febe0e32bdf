"""The served OpenAPI document says what *this* node can do: the enums of ingress and egress
kinds, storage backends, record formats and layout templates are filled in from the plugins
actually loaded, not from lists in the models (plugins add kinds and formats freely)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.node import Node


def _enum(schema: dict[str, Any], values: list[str]) -> None:
    """Constrain a string property (or the items of a string array) to ``values``."""
    target = schema["items"] if schema.get("type") == "array" and "items" in schema else schema
    if "anyOf" in target:  # a Literal list or an optional: constrain its string branch
        for branch in target["anyOf"]:
            if branch.get("type") == "string" or "enum" in branch:
                _set(branch, values)
        return
    _set(target, values)


def _set(target: dict[str, Any], values: list[str]) -> None:
    target.pop("pattern", None)
    target["type"] = "string"
    target["enum"] = sorted(values)
    if "default" in target and target["default"] not in values and values:
        target.pop("default")


def _prop(schemas: dict[str, Any], model: str, field: str) -> dict[str, Any] | None:
    return schemas.get(model, {}).get("properties", {}).get(field)


def record_formats(node: Node) -> list[str]:
    """Formats the loaded egress kinds declare (``formats`` on a kind), if any declares them."""
    found: set[str] = set()
    for kind in node.egress.kinds.values():
        found.update(getattr(kind, "formats", ()) or ())
    return sorted(found)


def templates(node: Node) -> list[str]:
    return sorted({*node.media.templates.names(), "custom"})


def apply_node_enums(document: dict[str, Any], node: Node) -> dict[str, Any]:
    schemas = document.get("components", {}).get("schemas", {})
    fills: list[tuple[str, str, list[str]]] = [
        ("IngressRequest", "kind", sorted(node.ingress.kinds)),
        ("EgressRequest", "kind", sorted(node.egress.kinds)),
        ("StorageOptions", "backend", sorted(node.storage.backends)),
        ("RecordOptions", "formats", record_formats(node)),
        ("Layout", "template", templates(node)),
        ("Layout", "screen_template", templates(node)),
    ]
    for model, field, values in fills:
        prop = _prop(schemas, model, field)
        if prop is None or not values:
            continue
        _enum(prop, values)
        prop["description"] = (prop.get("description", "") + f" (this node: {', '.join(values)})").strip()
    return document
