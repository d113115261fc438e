"""`x.matches('^PREFIX…')` without compiling the regular expression when it cannot match.

The CEL library compiles a `matches` pattern on every evaluation (Rust's regex crate, 24-35 µs
a call here: of a submit's 50 benchmark rules, the six with `matches` took 335 of the rules'
790 µs; bench/README.md, fourth session). A pattern anchored at the start by literal characters
(`'^REF-[0-9]+$'`) cannot match a string that does not begin with them, which is what most
strings a rule looks at do not. So a condition's `T.matches('literal')` calls, where T is a
plain selection (`payload.order_id`) and the pattern starts that way, are rewritten once, when
the rule is compiled, to `_gatehouse_matches(T, 'literal')`:
- the receiver a string that does not start with the literal characters: false, as the regex
  would say (the pattern is known to compile: checked once, by the library itself);
- any other string: the library's own `matches` on the same two strings;
- anything else (not a string, an unknown pattern): an error, on which the rules engine
  evaluates the rule's original program and takes its result or its error — so a rewritten
  rule gives exactly what the original gives, error messages included.
"""

from __future__ import annotations

import re
import string
from typing import Any

import cel
from lark import Tree

from approvals import celcheck

FUNCTION = "_gatehouse_matches"
_BUILTIN = cel.compile("s.matches(p)")
# Characters that stand for themselves in a Rust regex outside a class, in every flag mode
# reachable after a leading `^` (a flag group starts with `(`, which ends the prefix).
_LITERAL = frozenset(string.ascii_letters + string.digits + "-_:/@=,")
# A call the rewrite takes: a dotted selection, `.matches(`, one plain quoted literal, `)`.
_CALL = re.compile(
    r"\s*([A-Za-z_][A-Za-z0-9_]*(?:\s*\.\s*[A-Za-z_][A-Za-z0-9_]*)*)\s*\.\s*matches\s*\(\s*"
    r"('(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\")\s*\)\s*",
    re.DOTALL,
)
# Patterns known to compile, with their literal prefix (filled as rules are compiled).
_prefixes: dict[str, str] = {}


class Unsure(Exception):
    """The rewritten call cannot answer for the original: evaluate the original program."""


def anchored_prefix(pattern: str) -> str:
    """The characters every match of `pattern` starts with at the start of the text ('' if
    none are sure): the literal run after a leading `^`, less its last character when a
    quantifier follows it; no prefix for a pattern with an alternation anywhere."""
    if not pattern.startswith("^") or "|" in pattern:
        return ""
    prefix = ""
    for char in pattern[1:]:
        if char not in _LITERAL:
            if char in "?*+{":
                prefix = prefix[:-1]
            break
        prefix += char
    return prefix


def matches(target: Any, pattern: Any) -> bool:
    """The rewritten call (registered on every rules context as FUNCTION)."""
    prefix = _prefixes.get(pattern) if type(pattern) is str else None
    if not prefix or type(target) is not str:
        raise Unsure
    if not target.startswith(prefix):
        return False
    return bool(_BUILTIN.execute({"s": target, "p": pattern}))


def rewrite(when: str) -> str | None:
    """`when` with its rewritable `matches` calls rewritten (None: nothing to rewrite)."""
    if "matches" not in when:
        return None
    try:
        tree = celcheck.parse(when)
    except celcheck.CelTypeError:
        return None
    spans: list[tuple[int, int, str]] = []
    for node in tree.iter_subtrees():
        if node.data != "member_dot_arg" or str(node.children[1]) != "matches":
            continue
        if not isinstance(node, Tree) or getattr(node.meta, "empty", True):
            continue
        start, end = node.meta.start_pos, node.meta.end_pos
        call = _CALL.fullmatch(when[start:end])
        if call is None or when[:start].rstrip().endswith("."):
            continue  # not the call as a whole (a span inside a longer selection is not taken)
        target, literal = call.group(1), call.group(2)
        try:
            pattern = cel.evaluate(literal)  # the literal as the library reads it
            if not isinstance(pattern, str) or not anchored_prefix(pattern):
                continue
            _BUILTIN.execute({"s": "", "p": pattern})  # refuses a pattern that does not compile
        except Exception:  # noqa: S112 - such a call stays as written, and fails as written
            continue
        _prefixes[pattern] = anchored_prefix(pattern)
        spans.append((start, end, f"{FUNCTION}({target}, {literal})"))
    if not spans:
        return None
    rewritten = when
    for start, end, text in sorted(spans, reverse=True):
        rewritten = rewritten[:start] + text + rewritten[end:]
    return rewritten
