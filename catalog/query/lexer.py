"""Tokenizer of the search language (see :mod:`catalog.query` for the grammar).

Every token keeps its character offset in the query, so errors can point at it with a caret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from catalog.errors import QueryError


class QuerySyntaxError(QueryError):
    """A query that does not parse, names an unknown field or holds an unusable value.

    ``position`` is the 0-based character offset of the offending token; the message ends
    with the query and a caret under that position.
    """

    def __init__(self, message: str, query: str, position: int) -> None:
        self.query = query
        self.position = position
        self.reason = message
        line = query.replace("\n", " ").replace("\t", " ")
        super().__init__(f"{message} (at position {position + 1})\n  {line}\n  {' ' * position}^")


class Kind(Enum):
    """Token kinds."""

    WORD = "word"  # bare word: a field, an unquoted value, or a keyword
    STRING = "string"
    NUMBER = "number"
    OP = "operator"
    LPAREN = "("
    RPAREN = ")"
    LBRACKET = "["
    RBRACKET = "]"
    COMMA = ","
    END = "end of query"


@dataclass(frozen=True)
class Token:
    kind: Kind
    text: str  # the source text; for strings the unescaped value
    pos: int

    def keyword(self) -> str | None:
        """The lower-cased keyword this bare word spells, if any."""
        if self.kind is Kind.WORD and self.text.lower() in KEYWORDS:
            return self.text.lower()
        return None


KEYWORDS = frozenset({"and", "or", "not", "in", "contains", "exists", "true", "false", "null"})
OPERATORS = ("=~", "!~", "!=", "<=", ">=", "=", "<", ">")
_PUNCT = {
    "(": Kind.LPAREN,
    ")": Kind.RPAREN,
    "[": Kind.LBRACKET,
    "]": Kind.RBRACKET,
    ",": Kind.COMMA,
}
_WORD = re.compile(r"[\w.:+\-]+")
NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\Z")
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r"}


def tokenize(query: str) -> list[Token]:
    """Split ``query`` into tokens (the last one is END); raises QuerySyntaxError."""
    tokens: list[Token] = []
    i = 0
    while i < len(query):
        ch = query[i]
        if ch.isspace():
            i += 1
        elif ch in _PUNCT:
            tokens.append(Token(_PUNCT[ch], ch, i))
            i += 1
        elif ch in "'\"":
            value, end = _read_string(query, i)
            tokens.append(Token(Kind.STRING, value, i))
            i = end
        elif op := next((o for o in OPERATORS if query.startswith(o, i)), None):
            tokens.append(Token(Kind.OP, op, i))
            i += len(op)
        elif match := _WORD.match(query, i):
            word = match.group()
            kind = Kind.NUMBER if NUMBER.match(word) else Kind.WORD
            tokens.append(Token(kind, word, i))
            i = match.end()
        else:
            raise QuerySyntaxError(f"unexpected character {ch!r}", query, i)
    tokens.append(Token(Kind.END, "", len(query)))
    return tokens


def _read_string(query: str, start: int) -> tuple[str, int]:
    """Read a quoted string starting at ``start``; returns (value, offset after it).

    Escapes: ``\\\\ \\' \\" \\n \\t \\r \\uXXXX``; any other backslash is kept as typed, so
    regular expressions such as ``"^T1\\w+"`` need no doubling.
    """
    quote = query[start]
    out: list[str] = []
    i = start + 1
    while i < len(query):
        ch = query[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\x00":
            raise QuerySyntaxError("NUL character in a string", query, i)
        if ch == "\\" and i + 1 < len(query):
            nxt = query[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt == "u":
                digits = query[i + 2 : i + 6]
                if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise QuerySyntaxError("\\u needs four hex digits", query, i)
                code = int(digits, 16)
                if code == 0 or 0xD800 <= code <= 0xDFFF:
                    raise QuerySyntaxError(f"\\u{digits} is not a valid character", query, i)
                out.append(chr(code))
                i += 6
                continue
        out.append(ch)
        i += 1
    raise QuerySyntaxError("unterminated string", query, start)
