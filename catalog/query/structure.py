"""How the levels of a query relate to the result level, and what that implies for SQL.

Pure functions over the AST: which levels are joined (one ancestor per row) or tested with
EXISTS (any number of objects below), which joins may be INNER, and which condition groups
must hold for one and the same object below the result level.
"""

from __future__ import annotations

from catalog.query.parser import ANALYSIS, FILE, LEVELS, And, Condition, Node, Not, Or

#: The fixed chain of container levels, top-down.
HIERARCHY = LEVELS[:5]


def relation(target: str, level: str) -> str:
    """How ``level`` relates to rows of ``target``: "self", "above" (one object, joined) or
    "below" (any number of objects, tested with EXISTS)."""
    if level == target:
        return "self"
    if target == FILE:
        return "above"
    if level == FILE:
        return "below"
    if target == ANALYSIS:
        return "above"
    if level == ANALYSIS:
        return "below"
    return "above" if HIERARCHY.index(level) < HIERARCHY.index(target) else "below"


def requires(node: Node, level: str) -> bool:
    """True when ``node`` is false for every row lacking a ``level`` ancestor: some and-ed
    (or every or-ed) part is a positive condition on that level."""
    if isinstance(node, Condition):
        return (
            node.field.level == level
            and not node.negated
            and all(v.kind != "null" for v in node.values)
        )
    if isinstance(node, And):
        return any(requires(item, level) for item in node.items)
    if isinstance(node, Or):
        return all(requires(item, level) for item in node.items)
    return False


def below_group(node: Node, target: str) -> str | None:
    """The below-target level when ``node`` (and/or of conditions, no ``not``) only
    tests that level: such a group is matched by one and the same object."""
    levels: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, Not):
            return None
        if isinstance(item, Condition):
            levels.add(item.field.level)
        else:
            stack.extend(item.items)
    if len(levels) == 1:
        (level,) = levels
        if relation(target, level) == "below":
            return level
    return None
