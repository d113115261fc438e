"""An upper bound on what evaluating a rule condition costs, known before it runs.

The Rust CEL evaluator cannot be interrupted: it holds the GIL for the whole evaluation and
offers no step limit (neither it nor cel-python tracks cost; cel-go does). A condition has no
loops, so its work grows only through comprehensions (`all`, `exists`, `exists_one`, `map`,
`filter`) that iterate over payload lists and maps, and through operators that walk a value
(`in`, `==` between two computed values, `+`, `size`, the string functions). So the cost is a
polynomial in the payload's longest collection L and longest string S:

    sum over nodes at comprehension depth d:   L^d * STEP_NS
    and for each walking operator at depth d:  L^d * (L * ELEMENT_NS + S * BYTE_NS)

Its shape is computed once, when the rule is compiled; L and S come from the payload at
evaluation time, and a rule whose bound exceeds what is left of the time budget is not run at
all: the proposal goes to review (docs/rules.md, "Limits"). The constants were measured with
bench/rules_cost.py on the CI machine and rounded up; the bound over-estimates (literal lists
count as L, every `==` between two computed values as a walk), which only ever errs towards
review.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from celpy.celparser import CELParser
from lark import Token, Tree

from approvals import celcheck

# The payload every saved condition must fit in the time budget with (rules.py refuses the
# others at save); a payload no larger costs each rule at most its reference bound.
REFERENCE_ITEMS = 100
REFERENCE_STRING = 1000
STEP_NS = 250.0  # one node evaluated once inside a comprehension (bind, clone, dispatch)
ELEMENT_NS = 60.0  # one element visited by `in`, `==` on lists, list `+`
BYTE_NS = 0.5  # one byte scanned by a string function or compared

_WALKING_RELATIONS = {"relation_in", "relation_eq", "relation_ne"}
_WALKING_CALLS = {"size", "contains", "startsWith", "endsWith", "matches", "string"}

_parser: CELParser | None = None


@dataclass(frozen=True)
class CostShape:
    """steps[d]: nodes evaluated L^d times; walks[d]: walking operators at depth d."""

    steps: tuple[int, ...]
    walks: tuple[int, ...]
    # Derived once (evaluate reads them for every rule of every proposal): the deepest
    # comprehension nesting, and whether the cost does not depend on the payload at all.
    depth: int = field(init=False)
    reference_ns: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "depth", len(self.steps) - 1)
        reference = self.nanoseconds(
            longest_collection=REFERENCE_ITEMS, longest_string=REFERENCE_STRING
        )
        object.__setattr__(self, "reference_ns", reference)

    @property
    def flat(self) -> bool:
        """No comprehension and no walk: the cost does not depend on the payload."""
        return self.depth == 0 and not self.walks[0]

    def nanoseconds(self, *, longest_collection: int, longest_string: int) -> float:
        n = max(longest_collection, 1)
        per_walk = n * ELEMENT_NS + longest_string * BYTE_NS
        if not self.depth:  # the common case, without the loops
            return self.steps[0] * STEP_NS + self.walks[0] * per_walk
        total = 0.0
        for d, count in enumerate(self.steps):
            total += count * n**d * STEP_NS
        for d, count in enumerate(self.walks):
            total += count * n**d * per_walk
        return total


def shape(expression: str) -> CostShape:
    """The cost shape of a condition that already parsed (compile_condition checks first)."""
    global _parser
    if _parser is None:
        _parser = CELParser()
    steps: list[int] = [0]
    walks: list[int] = [0]
    _walk(_parser.parse(expression), 0, steps, walks)
    return CostShape(steps=tuple(steps), walks=tuple(walks))


def _count(counts: list[int], depth: int) -> None:
    while len(counts) <= depth:
        counts.append(0)
    counts[depth] += 1


def _is_literal(node: Tree | Token) -> bool:
    inner = celcheck._unwrap(node)
    return isinstance(inner, Tree) and inner.data == "literal"


def _is_scalar(node: Tree | Token) -> bool:
    """A literal, or arithmetic with a literal operand: comparing it never walks a list."""
    inner = celcheck._unwrap(node)
    if not isinstance(inner, Tree):
        return False
    if inner.data == "literal":
        return True
    if inner.data in ("addition", "multiplication") and len(inner.children) == 2:
        op, right = inner.children
        return isinstance(op, Tree) and (_is_literal(op.children[0]) or _is_literal(right))
    return False


def _walk(node: Tree | Token | None, depth: int, steps: list[int], walks: list[int]) -> None:
    if not isinstance(node, Tree):
        return
    children = [c for c in node.children if c is not None]
    trees = [c for c in children if isinstance(c, Tree)]
    if node.data == "member_dot_arg" and str(children[1]) in celcheck.MACROS:
        # target once at this depth; the body once per element of the target
        _count(steps, depth)
        _walk(children[0], depth, steps, walks)
        args = list(children[-1].children) if trees[-1].data == "exprlist" else []
        if len(args) == 2:
            _count(steps, depth + 1)
            _walk(args[1], depth + 1, steps, walks)
        return
    if len(children) == 1 and isinstance(children[0], Tree):
        _walk(children[0], depth, steps, walks)  # a pass-through level of the grammar
        return
    _count(steps, depth)
    if node.data == "relation" and len(trees) == 2:
        op = trees[0]
        left = op.children[0]
        if op.data == "relation_in" or (
            op.data in _WALKING_RELATIONS and not (_is_scalar(left) or _is_scalar(trees[1]))
        ):
            _count(walks, depth)
    elif node.data == "addition" and len(trees) == 2:
        if not (_is_literal(trees[0].children[0]) or _is_literal(trees[1])):
            _count(walks, depth)
    elif node.data in ("member_dot_arg", "ident_arg", "dot_ident_arg"):
        name = str(children[1] if node.data == "member_dot_arg" else children[0])
        if name in _WALKING_CALLS:
            _count(walks, depth)
    for child in trees:
        _walk(child, depth, steps, walks)


@dataclass
class Extent:
    """The payload's longest collection and longest string, gathered while converting it."""

    longest_collection: int = 0
    longest_string: int = 0

    @property
    def within_reference(self) -> bool:
        return (
            self.longest_collection <= REFERENCE_ITEMS and self.longest_string <= REFERENCE_STRING
        )

    def bound(self, shape: CostShape) -> float:
        """Nanoseconds `shape` can take on this payload."""
        return shape.nanoseconds(
            longest_collection=self.longest_collection, longest_string=self.longest_string
        )
