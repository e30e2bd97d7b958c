"""The ``updateDescription`` of an update event, computed from the document before and after.

A real primary logs a ``$v: 2`` delta and change streams translate it ("Change Events" manual
page, update event: updatedFields / removedFields / truncatedArrays).  Diffing the two images
gives the same answer for field-level updates; whole-value replacements of a sub-document show
up as their changed leaves instead of one updated field, which a consumer applies the same way.
"""

from __future__ import annotations

from typing import Any


def same_value(a: Any, b: Any) -> bool:
    """BSON equality: type-sensitive (1 != 1.0 != True) and order-sensitive for documents."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            ka == kb and same_value(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def describe_update(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Return ``{updatedFields, removedFields, truncatedArrays}`` turning ``before`` into ``after``."""
    updated: dict[str, Any] = {}
    removed: list[str] = []
    truncated: list[dict[str, Any]] = []
    _diff_document(before, after, "", updated, removed, truncated)
    return {"updatedFields": updated, "removedFields": removed, "truncatedArrays": truncated}


def _diff_document(
    before: dict[str, Any],
    after: dict[str, Any],
    prefix: str,
    updated: dict[str, Any],
    removed: list[str],
    truncated: list[dict[str, Any]],
) -> None:
    for key, new in after.items():
        path = prefix + key
        if key not in before:
            updated[path] = new
            continue
        old = before[key]
        if same_value(old, new):
            continue
        if isinstance(old, dict) and isinstance(new, dict) and new:
            _diff_document(old, new, path + ".", updated, removed, truncated)
        elif isinstance(old, list) and isinstance(new, list):
            _diff_array(old, new, path, updated, truncated)
        else:
            updated[path] = new
    for key in before:
        if key not in after:
            removed.append(prefix + key)


def _diff_array(
    old: list[Any], new: list[Any], path: str, updated: dict[str, Any], truncated: list[dict[str, Any]]
) -> None:
    common = min(len(old), len(new))
    changed = [i for i in range(common) if not same_value(old[i], new[i])]
    if len(changed) * 2 > max(common, 1):
        # Mostly rewritten: the server's delta would set the whole array as well.
        updated[path] = new
        return
    for i in changed:
        updated[f"{path}.{i}"] = new[i]
    for i in range(common, len(new)):
        updated[f"{path}.{i}"] = new[i]
    if len(new) < len(old):
        truncated.append({"field": path, "newSize": len(new)})
