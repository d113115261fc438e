"""A static type check of rule conditions against the declared rule context.

Neither Python CEL library ships CEL's type checker (cel-go's `checker`): the Rust-backed
`cel` package parses and evaluates, and `celpy` parses into a tree. So syntax is checked by the
evaluating library (its own message is shown), and this module walks `celpy`'s parse tree with
the declared variable types, the way a CEL checker would, to refuse at save time what can only
fail later: an undeclared variable or function, a field the context does not have, an operator
on mismatched types (`confidence * 2`: CEL does not coerce int to double), a condition that is
not a bool. The payload is `map(string, dyn)`: its fields are checked at evaluation time, where
a missing one is an error and therefore routes the proposal to review.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celpy.celparser import CELParseError, CELParser
from lark import Token, Tree

from config.env import parse_duration

# A type is a short string ("bool", "double", "dyn", …) or a tuple: ("list", T), ("map", K, V),
# ("obj", name) for the two structured context values, ("type",) for type names.
Type = Any
DYN = "dyn"
NUMERIC = {"int", "uint", "double"}

OBJECTS: dict[str, dict[str, Type]] = {
    "action": {"type": "string", "irreversible": "bool", "risk": "string"},
    "stats": {},
}
VARIABLES: dict[str, Type] = {
    "confidence": "double",
    "payload": ("map", "string", DYN),
    "action": ("obj", "action"),
    "service": "string",
    "model": "string",
    "feature": "string",
    "prompt_version": "string",
    "now": "timestamp",
    "stats": ("obj", "stats"),
}
TYPE_NAMES = {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type"}
STATS_OUTCOMES = ("approve", "reject", "review", "any")
TIMESTAMP_METHODS = {
    "getFullYear",
    "getMonth",
    "getDate",
    "getDayOfMonth",
    "getDayOfWeek",
    "getDayOfYear",
    "getHours",
    "getMinutes",
    "getSeconds",
    "getMilliseconds",
}
STRING_PREDICATES = {"contains", "startsWith", "endsWith", "matches"}
MACROS = {"all", "exists", "exists_one", "map", "filter"}

_parser: CELParser | None = None


class CelTypeError(Exception):
    pass


@dataclass
class _Scope:
    bound: dict[str, Type]


def _name(t: Type) -> str:
    if isinstance(t, tuple):
        if t[0] == "list":
            return f"list({_name(t[1])})"
        if t[0] == "map":
            return f"map({_name(t[1])}, {_name(t[2])})"
        if t[0] == "obj":
            return t[1]
        return "type"
    return str(t)


def parse(expression: str) -> Tree:
    """`expression`'s parse tree (with source positions); CelTypeError on a syntax error."""
    global _parser
    if _parser is None:
        _parser = CELParser()
    try:
        return _parser.parse(expression)
    except CELParseError as exc:
        raise CelTypeError(f"syntax: {exc}") from None


def check(expression: str) -> None:
    """Raise CelTypeError if `expression` does not type-check as a rule condition."""
    tree = parse(expression)
    result = _Checker().visit(tree, _Scope({}))
    if result not in ("bool", DYN):
        raise CelTypeError(f"a condition must be a bool, but this expression is {_name(result)}")


def _unify(a: Type, b: Type) -> Type:
    if a == b:
        return a
    if a == DYN or b == DYN:
        return DYN
    return None


def _comparable(a: Type, b: Type) -> bool:
    if DYN in (a, b) or a == b:
        return True
    return a in NUMERIC and b in NUMERIC


class _Checker:
    def visit(self, node: Tree | Token, scope: _Scope) -> Type:
        if isinstance(node, Token):
            raise CelTypeError(f"unexpected token {node!s}")
        children = [c for c in node.children if c is not None]
        method = getattr(self, f"_{node.data}", None)
        if method is not None:
            return method(node, children, scope)
        if len(children) == 1:  # pass-through levels of the grammar (expr, relation, …)
            return self.visit(children[0], scope)
        raise CelTypeError(f"unsupported construct: {node.data}")

    # --- operators ---------------------------------------------------------------------------

    def _expr(self, node: Tree, children: list[Any], scope: _Scope) -> Type:
        if len(children) == 1:
            return self.visit(children[0], scope)
        cond, then, other = (self.visit(c, scope) for c in children)
        if cond not in ("bool", DYN):
            raise CelTypeError(f"the condition of ?: must be a bool, not {_name(cond)}")
        joined = _unify(then, other)
        if joined is None:
            raise CelTypeError(f"?: branches differ: {_name(then)} and {_name(other)}")
        return joined

    def _logical(self, op: str, children: list[Any], scope: _Scope) -> Type:
        if len(children) == 1:
            return self.visit(children[0], scope)
        for child in children:
            t = self.visit(child, scope)
            if t not in ("bool", DYN):
                raise CelTypeError(f"{op} needs bool operands, got {_name(t)}")
        return "bool"

    def _conditionalor(self, node: Tree, children: list[Any], scope: _Scope) -> Type:
        return self._logical("||", children, scope)

    def _conditionaland(self, node: Tree, children: list[Any], scope: _Scope) -> Type:
        return self._logical("&&", children, scope)

    def _binary(self, children: list[Any], scope: _Scope) -> tuple[str, Type, Type]:
        # relation: [relation_op(relation)] addition — the operator node holds the left side
        op_node, right = children
        left = self.visit(op_node.children[0], scope)
        return op_node.data, left, self.visit(right, scope)

    def _relation(self, node: Tree, children: list[Any], scope: _Scope) -> Type:
        if len(children) == 1:
            return self.visit(children[0], scope)
        op, left, right = self._binary(children, scope)
        symbol = {
            "relation_lt": "<",
            "relation_le": "<=",
            "relation_gt": ">",
            "relation_ge": ">=",
            "relation_eq": "==",
            "relation_ne": "!=",
            "relation_in": "in",
        }[op]
        if symbol == "in":
            if right == DYN:
                return "bool"
            if _is_coll(right) and _comparable(left, right[1]):
                return "bool"
            raise CelTypeError(f"no matching overload for {_name(left)} in {_name(right)}")
        if symbol in ("==", "!="):
            if _comparable(left, right) or "null" in (left, right):
                return "bool"
        elif _comparable(left, right) and left in (
            *NUMERIC,
            "string",
            "bytes",
            "bool",
            "timestamp",
            "duration",
            DYN,
        ):
            return "bool"
        raise CelTypeError(f"no matching overload for {_name(left)} {symbol} {_name(right)}")

    def _arith(self, symbol: str, left: Type, right: Type) -> Type:
        if DYN in (left, right):
            other = right if left == DYN else left
            if other == "timestamp" and symbol == "-":
                return DYN
            return other if other in (*NUMERIC, "string", "duration", "timestamp") else DYN
        if left == right and left in NUMERIC:
            return left
        if symbol == "+" and left == right and left in ("string", "bytes", "duration"):
            return left
        if symbol == "+" and isinstance(left, tuple) and left[0] == "list" == right[0]:
            return ("list", _unify(left[1], right[1]) or DYN)
        if symbol in ("+", "-") and left == "timestamp" and right == "duration":
            return "timestamp"
        if symbol == "+" and left == "duration" and right == "timestamp":
            return "timestamp"
        if symbol == "-" and left == right and left in ("timestamp", "duration"):
            return "duration"
        raise CelTypeError(f"no matching overload for {_name(left)} {symbol} {_name(right)}")

    def _addition(self, node: Tree, children: list[Any], scope: _Scope) -> Type:
        if len(children) == 1:
            return self.visit(children[0], scope)
        op, left, right = self._binary(children, scope)
        return self._arith("+" if op == "addition_add" else "-", left, right)

    def _multiplication(self, node: Tree, children: list[Any], scope: _Scope) -> Type:
        if len(children) == 1:
            return self.visit(children[0], scope)
        op, left, right = self._binary(children, scope)
        symbol = {"multiplication_mul": "*", "multiplication_div": "/"}.get(op, "%")
        if symbol == "%" and "double" in (left, right):
            raise CelTypeError("no matching overload for double % …")
        if DYN not in (left, right) and not (left == right and left in NUMERIC):
            raise CelTypeError(f"no matching overload for {_name(left)} {symbol} {_name(right)}")
        return left if left != DYN else right

    def _unary(self, node: Tree, children: list[Any], scope: _Scope) -> Type:
        if len(children) == 1:
            return self.visit(children[0], scope)
        op, operand = children[0].data, self.visit(children[1], scope)
        if op == "unary_not":
            if operand not in ("bool", DYN):
                raise CelTypeError(f"! needs a bool, got {_name(operand)}")
            return "bool"
        if operand not in (*NUMERIC, "duration", DYN):
            raise CelTypeError(f"- needs a number, got {_name(operand)}")
        return operand

    # --- members and calls -------------------------------------------------------------------

    def _member_dot(self, node: Tree, children: list[Any], scope: _Scope) -> Type:
        target, field = self.visit(children[0], scope), str(children[1])
        return self._field(target, field)

    def _field(self, target: Type, field: str) -> Type:
        if target == DYN:
            return DYN
        if isinstance(target, tuple) and target[0] == "map":
            if target[1] not in ("string", DYN):
                raise CelTypeError(f"cannot select .{field} on {_name(target)}")
            return target[2]
        if isinstance(target, tuple) and target[0] == "obj":
            fields = OBJECTS[target[1]]
            if field not in fields:
                known = ", ".join(sorted(fields)) or "none"
                raise CelTypeError(f"{target[1]} has no field {field!r} (fields: {known})")
            return fields[field]
        raise CelTypeError(f"type {_name(target)} has no field {field!r}")

    def _member_index(self, node: Tree, children: list[Any], scope: _Scope) -> Type:
        target, index = self.visit(children[0], scope), self.visit(children[1], scope)
        if target == DYN:
            return DYN
        if isinstance(target, tuple) and target[0] == "list" and index in ("int", "uint", DYN):
            return target[1]
        if isinstance(target, tuple) and target[0] == "map" and _comparable(index, target[1]):
            return target[2]
        raise CelTypeError(f"cannot index {_name(target)} with {_name(index)}")

    def _member_object(self, node: Tree, children: list[Any], scope: _Scope) -> Type:
        raise CelTypeError("message construction is not available in rules")

    def _args(self, children: list[Any]) -> list[Any]:
        if len(children) > 2 and isinstance(children[-1], Tree) and children[-1].data == "exprlist":
            return list(children[-1].children)
        return []

    def _member_dot_arg(self, node: Tree, children: list[Any], scope: _Scope) -> Type:
        method = str(children[1])
        args = self._args(children)
        if method in MACROS:
            return self._macro(method, children[0], args, scope)
        target = self.visit(children[0], scope)
        if target == ("obj", "stats"):
            return self._stats(method, args, scope)
        arg_types = [self.visit(a, scope) for a in args]
        if target == DYN:
            return DYN if method != "size" else "int"
        if method == "size" and not args and (target in ("string", "bytes") or _is_coll(target)):
            return "int"
        if (
            target == "string"
            and method in STRING_PREDICATES
            and len(arg_types) == 1
            and arg_types[0] in ("string", DYN)
        ):
            return "bool"
        if target == "timestamp" and method in TIMESTAMP_METHODS and not args:
            return "int"
        raise CelTypeError(
            f"no method {method}({', '.join(map(_name, arg_types))}) on {_name(target)}"
        )

    def _stats(self, method: str, args: list[Any], scope: _Scope) -> Type:
        if method not in ("count", "approved_sum"):
            raise CelTypeError(f"stats has no function {method!r} (count, approved_sum)")
        if len(args) != 2:
            raise CelTypeError(f"stats.{method} takes two arguments: (…, window)")
        for arg in args:
            if self.visit(arg, scope) not in ("string", DYN):
                raise CelTypeError(f"the arguments of stats.{method} are strings")
        first, window = (_string_literal(a) for a in args)
        if window is not None:
            try:
                parse_duration(window)
            except Exception:
                raise CelTypeError(
                    f"stats.{method}: window {window!r} is not a duration such as 15m, 24h or 7d"
                ) from None
        if method == "count":
            if first is not None and first not in STATS_OUTCOMES:
                raise CelTypeError(
                    f"stats.count: outcome {first!r} is not one of {', '.join(STATS_OUTCOMES)}"
                )
            return "int"
        if first is not None and not first.startswith("payload."):
            raise CelTypeError(
                f"stats.approved_sum: field {first!r} must be a path such as 'payload.amount'"
            )
        return "double"

    def _macro(self, method: str, target_node: Any, args: list[Any], scope: _Scope) -> Type:
        target = self.visit(target_node, scope)
        if len(args) != 2:
            raise CelTypeError(f"{method}() takes a variable and an expression")
        var = _ident_name(args[0])
        if var is None:
            raise CelTypeError(f"the first argument of {method}() must be a variable name")
        if target == DYN:
            element = DYN
        elif isinstance(target, tuple) and target[0] in ("list", "map"):
            element = target[1]
        else:
            raise CelTypeError(f"{method}() needs a list or a map, not {_name(target)}")
        body = self.visit(args[1], _Scope({**scope.bound, var: element}))
        if method in ("all", "exists", "exists_one", "filter") and body not in ("bool", DYN):
            raise CelTypeError(f"the predicate of {method}() must be a bool, not {_name(body)}")
        if method == "map":
            return ("list", body)
        if method == "filter":
            return ("list", element)
        return "bool"

    def _ident_arg(self, node: Tree, children: list[Any], scope: _Scope) -> Type:
        name = str(children[0])
        args = list(children[1].children) if len(children) > 1 else []
        if name == "has":
            if len(args) != 1 or not _is_select(args[0]):
                raise CelTypeError("has() takes a field selection such as has(payload.reason)")
            self.visit(args[0], scope)
            return "bool"
        types = [self.visit(a, scope) for a in args]
        if name == "size" and len(types) == 1:
            t = types[0]
            if t in ("string", "bytes", DYN) or _is_coll(t):
                return "int"
        conversions = {
            "int": (*NUMERIC, "string", "timestamp", DYN),
            "uint": (*NUMERIC, "string", DYN),
            "double": (*NUMERIC, "string", DYN),
            "string": (*NUMERIC, "string", "bool", "bytes", "timestamp", "duration", DYN),
            "bool": ("bool", "string", DYN),
            "timestamp": ("string", "timestamp", DYN),
            "duration": ("string", "duration", DYN),
            "dyn": None,
            "type": None,
        }
        if name in conversions and len(types) == 1:
            allowed = conversions[name]
            if allowed is None:
                return DYN if name == "dyn" else ("type",)
            if types[0] in allowed:
                return name
        if name == "matches" and len(types) == 2 and all(t in ("string", DYN) for t in types):
            return "bool"
        raise CelTypeError(f"no function {name}({', '.join(map(_name, types))})")

    def _dot_ident_arg(self, node: Tree, children: list[Any], scope: _Scope) -> Type:
        return self._ident_arg(node, children, scope)

    def _primary(self, node: Tree, children: list[Any], scope: _Scope) -> Type:
        return self.visit(children[0], scope)

    def _ident(self, node: Tree, children: list[Any], scope: _Scope) -> Type:
        name = str(children[0])
        if name in scope.bound:
            return scope.bound[name]
        if name in VARIABLES:
            return VARIABLES[name]
        if name in TYPE_NAMES:
            return ("type",)
        known = ", ".join(sorted(VARIABLES))
        raise CelTypeError(f"undeclared reference to {name!r} (variables: {known})")

    def _dot_ident(self, node: Tree, children: list[Any], scope: _Scope) -> Type:
        return self._ident(node, children, scope)

    def _paren_expr(self, node: Tree, children: list[Any], scope: _Scope) -> Type:
        return self.visit(children[0], scope)

    def _list_lit(self, node: Tree, children: list[Any], scope: _Scope) -> Type:
        element: Type = None
        for item in children[0].children if children else []:
            t = self.visit(item, scope)
            element = t if element is None else (_unify(element, t) or DYN)
        return ("list", element or DYN)

    def _map_lit(self, node: Tree, children: list[Any], scope: _Scope) -> Type:
        items = list(children[0].children) if children else []
        key: Type = None
        value: Type = None
        for index, item in enumerate(items):
            t = self.visit(item, scope)
            if index % 2 == 0:
                key = t if key is None else (_unify(key, t) or DYN)
            else:
                value = t if value is None else (_unify(value, t) or DYN)
        return ("map", key or DYN, value or DYN)

    def _literal(self, node: Tree, children: list[Any], scope: _Scope) -> Type:
        token = children[0]
        return {
            "INT_LIT": "int",
            "UINT_LIT": "uint",
            "FLOAT_LIT": "double",
            "STRING_LIT": "string",
            "MLSTRING_LIT": "string",
            "BYTES_LIT": "bytes",
            "BOOL_LIT": "bool",
            "NULL_LIT": "null",
        }[token.type]


def _is_coll(t: Type) -> bool:
    return isinstance(t, tuple) and t[0] in ("list", "map")


def _unwrap(node: Any) -> Any:
    """The innermost node of a chain of single-child grammar levels."""
    while (
        isinstance(node, Tree)
        and len([c for c in node.children if c is not None]) == 1
        and node.data not in ("ident", "literal", "member_dot")
        and isinstance(node.children[0], Tree)
    ):
        node = node.children[0]
    return node


def _ident_name(node: Any) -> str | None:
    inner = _unwrap(node)
    if isinstance(inner, Tree) and inner.data == "ident":
        return str(inner.children[0])
    return None


def _is_select(node: Any) -> bool:
    inner = _unwrap(node)
    return isinstance(inner, Tree) and inner.data == "member_dot"


def _string_literal(node: Any) -> str | None:
    inner = _unwrap(node)
    token = inner.children[0] if isinstance(inner, Tree) and inner.data == "literal" else None
    if isinstance(token, Token) and token.type == "STRING_LIT":
        text = str(token)
        if text[:1] in "rR":
            return text[2:-1]
        return text[1:-1]
    return None


def stats_calls(expression: str) -> frozenset[tuple[str, str, str]]:
    """The `stats.count(…)` and `stats.approved_sum(…)` calls of a condition whose two arguments
    are plain string literals, as (method, first argument, window): figures it may read, known
    before it runs (approvals/decisions.py reads them with the lock it takes, in one round
    trip). A call with a computed argument (or an escape in its literal) is not included: it is
    read when the condition runs."""
    found: set[tuple[str, str, str]] = set()
    for node in parse(expression).iter_subtrees():
        if node.data != "member_dot_arg" or _ident_name(node.children[0]) != "stats":
            continue
        children = node.children
        if not (len(children) > 2 and isinstance(children[-1], Tree)):
            continue
        args = [_plain_string_literal(arg) for arg in children[-1].children]
        if len(args) == 2 and args[0] is not None and args[1] is not None:
            found.add((str(children[1]), args[0], args[1]))
    return frozenset(found)


def _plain_string_literal(node: Any) -> str | None:
    """A string literal's value when it is spelled as it reads: quoted once, no escape."""
    inner = _unwrap(node)
    token = inner.children[0] if isinstance(inner, Tree) and inner.data == "literal" else None
    if not (isinstance(token, Token) and token.type == "STRING_LIT"):
        return None
    text = str(token)
    if text[:1] not in "'\"" or text[:3] in ("'''", '"""') or "\\" in text:
        return None
    return text[1:-1]
