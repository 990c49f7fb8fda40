"""Parser of the search language into a small AST (grammar in :mod:`catalog.query`).

::

    query     := [or_expr] END
    or_expr   := and_expr ("or" and_expr)*
    and_expr  := not_expr ("and" not_expr)*
    not_expr  := "not" not_expr | "(" or_expr ")" | condition
    condition := FIELD ( OP value | ["not"] "contains" value | ["not"] "in" list
                       | ["not"] "exists" )
    list      := "[" value ("," value)* "]"

Fields are validated here (level, attribute, JSON key syntax); values keep their source text
so the compiler can read ``001`` as a label or as the number 1 depending on the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, NoReturn

from catalog.query.lexer import NUMBER, Kind, QuerySyntaxError, Token, tokenize

FILE = "file"
ANALYSIS = "analysis"
#: Every level a field may name, top-down; analyses and files last.
LEVELS = ("group", "project", "subject", "session", "acquisition", ANALYSIS, FILE)
#: A JSON key segment (info / classification); keys are spelled literally in SQL.
KEY_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*\Z")
MAX_DEPTH = 64


class AttrKind(StrEnum):
    """How an attribute is stored, which decides the SQL a condition compiles to."""

    TEXT = "text"
    INTEGER = "integer"
    TIME = "time"
    TAGS = "tags"
    JSON = "json"
    CLASSIFICATION = "classification"


_COMMON = {
    "id": AttrKind.INTEGER,
    "created": AttrKind.TIME,
    "modified": AttrKind.TIME,
    "tags": AttrKind.TAGS,
    "info": AttrKind.JSON,
}
CONTAINER_ATTRS: dict[str, AttrKind] = {"label": AttrKind.TEXT, **_COMMON}
FILE_ATTRS: dict[str, AttrKind] = {
    **{a: AttrKind.TEXT for a in ("name", "type", "modality", "mimetype", "sha256")},
    "origin_type": AttrKind.TEXT,
    "size": AttrKind.INTEGER,
    "version": AttrKind.INTEGER,
    "classification": AttrKind.CLASSIFICATION,
    **_COMMON,
}


def attributes(level: str) -> dict[str, AttrKind]:
    return FILE_ATTRS if level == FILE else CONTAINER_ATTRS


@dataclass(frozen=True)
class Field:
    """``<level>.<attr>[.<key>...]``; ``keys`` is the JSON path below info/classification."""

    level: str
    attr: str
    keys: tuple[str, ...]
    kind: AttrKind
    pos: int
    text: str


ValueKind = Literal["string", "word", "number", "bool", "null"]


@dataclass(frozen=True)
class Value:
    """A literal; ``raw`` is its text (unescaped for quoted strings)."""

    kind: ValueKind
    raw: str
    pos: int

    @property
    def number(self) -> int | float:
        """The numeric value of a NUMBER literal (or of a string spelling a number)."""
        try:
            return int(self.raw)
        except ValueError:
            return float(self.raw)

    @property
    def looks_numeric(self) -> bool:
        return NUMBER.match(self.raw.strip()) is not None


@dataclass(frozen=True)
class Condition:
    """``field op values``; ``negated`` for ``!=``, ``!~`` and postfix ``not``."""

    field: Field
    op: str  # "=", "<", "<=", ">", ">=", "=~", "contains", "in", "exists"
    values: tuple[Value, ...]
    negated: bool
    pos: int


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


Node = Condition | And | Or | Not

_NEGATED_OPS = {"!=": "=", "!~": "=~"}


def parse(query: str) -> Node | None:
    """Parse ``query``; None for an empty query (no condition)."""
    return _Parser(query).parse()


def parse_field(text: str, query: str | None = None, pos: int = 0) -> Field:
    """Validate ``<level>.<attr>[.<key>...]``; errors point into ``query`` (default: text)."""
    where = query if query is not None else text
    parts = text.split(".")
    level = parts[0].lower()
    if level not in LEVELS:
        raise QuerySyntaxError(
            f"unknown level {parts[0]!r} in field {text!r} (one of {', '.join(LEVELS)})",
            where,
            pos,
        )
    attrs = attributes(level)
    attr = parts[1].lower() if len(parts) > 1 else ""
    if attr not in attrs:
        raise QuerySyntaxError(
            f"unknown field {text!r}: {level} attributes are {', '.join(sorted(attrs))}",
            where,
            pos,
        )
    kind = attrs[attr]
    keys = tuple(parts[2:])
    if kind is AttrKind.JSON and not keys:
        raise QuerySyntaxError(f"{text!r}: name a key, e.g. {level}.info.KEY", where, pos)
    if kind is AttrKind.CLASSIFICATION and len(keys) != 1:
        raise QuerySyntaxError(
            f"{text!r}: name one classification key, e.g. file.classification.Intent",
            where,
            pos,
        )
    if kind not in (AttrKind.JSON, AttrKind.CLASSIFICATION) and keys:
        raise QuerySyntaxError(f"{text!r}: {level}.{attr} has no sub-keys", where, pos)
    for key in keys:
        if not KEY_SEGMENT.match(key):
            raise QuerySyntaxError(
                f"invalid key {key!r} in {text!r}: use letters, digits, '_' and '-'", where, pos
            )
    return Field(level, attr, keys, kind, pos, text)


class _Parser:
    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = tokenize(query)
        self.i = 0
        self.depth = 0

    def parse(self) -> Node | None:
        if self.peek().kind is Kind.END:
            return None
        node = self.or_expr()
        if self.peek().kind is not Kind.END:
            self.fail("expected 'and', 'or' or the end of the query")
        return node

    # -- token helpers ---------------------------------------------------------------------

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind is not Kind.END:
            self.i += 1
        return tok

    def at_keyword(self, word: str) -> bool:
        return self.peek().keyword() == word

    def expect(self, kind: Kind, what: str) -> Token:
        if self.peek().kind is not kind:
            self.fail(f"expected {what}")
        return self.take()

    def fail(self, message: str, token: Token | None = None) -> NoReturn:
        tok = token or self.peek()
        found = "the end of the query" if tok.kind is Kind.END else repr(tok.text)
        raise QuerySyntaxError(f"{message}, found {found}", self.query, tok.pos)

    # -- grammar ---------------------------------------------------------------------------

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.at_keyword("or"):
            self.take()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Node:
        items = [self.not_expr()]
        while self.at_keyword("and"):
            self.take()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"query nested deeper than {MAX_DEPTH} levels")
        try:
            if self.at_keyword("not"):
                self.take()
                return Not(self.not_expr())
            if self.peek().kind is Kind.LPAREN:
                self.take()
                node = self.or_expr()
                self.expect(Kind.RPAREN, "')'")
                return node
            return self.condition()
        finally:
            self.depth -= 1

    def condition(self) -> Condition:
        tok = self.peek()
        if tok.kind is not Kind.WORD or tok.keyword() is not None or "." not in tok.text:
            self.fail("expected a field such as file.name or session.info.KEY")
        self.take()
        field = parse_field(tok.text, self.query, tok.pos)
        op_tok = self.peek()
        if op_tok.kind is Kind.OP:
            self.take()
            op = _NEGATED_OPS.get(op_tok.text, op_tok.text)
            return Condition(field, op, (self.value(),), op_tok.text in _NEGATED_OPS, op_tok.pos)
        negated = self.at_keyword("not")
        if negated:
            self.take()
        word = self.peek().keyword()
        if word == "contains":
            self.take()
            return Condition(field, "contains", (self.value(),), negated, op_tok.pos)
        if word == "in":
            self.take()
            return Condition(field, "in", self.value_list(), negated, op_tok.pos)
        if word == "exists":
            self.take()
            return Condition(field, "exists", (), negated, op_tok.pos)
        expected = "'contains', 'in' or 'exists'" if negated else "an operator"
        self.fail(f"expected {expected} after {field.text!r}")

    def value_list(self) -> tuple[Value, ...]:
        self.expect(Kind.LBRACKET, "'[' to start a list of values")
        values = [self.value()]
        while self.peek().kind is Kind.COMMA:
            self.take()
            values.append(self.value())
        self.expect(Kind.RBRACKET, "',' or ']'")
        return tuple(values)

    def value(self) -> Value:
        tok = self.peek()
        if tok.kind is Kind.STRING:
            self.take()
            return Value("string", tok.text, tok.pos)
        if tok.kind is Kind.NUMBER:
            self.take()
            return Value("number", tok.text, tok.pos)
        if tok.kind is Kind.WORD:
            word = tok.keyword()
            if word in ("true", "false"):
                self.take()
                return Value("bool", word, tok.pos)
            if word == "null":
                self.take()
                return Value("null", word, tok.pos)
            if word is None:
                self.take()
                return Value("word", tok.text, tok.pos)
        self.fail("expected a value (quote it if it is a keyword)")
