"""The BENCH lines of bench/*.py, parsed and checked for what their own figures must agree on.

`BENCH <name> value=<v><unit> baseline=<b><unit> ratio=<r> goal=<op><g>[<unit>]`: the ratio is value/baseline or
baseline/value as printed (to the digits printed), and the goal points the way "better" goes for the line's unit. A
goal with the line's unit applies to the value (an absolute goal: 0.2 s, 4096 MB), one without a unit to the ratio.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

NUMBER = r"-?(?:\d+(?:\.\d+)?|inf)"
BENCH_LINE = re.compile(
    rf"BENCH (?P<name>\S+) value=(?P<value>{NUMBER})(?P<unit>[^\s\d]*) baseline=(?P<baseline>{NUMBER})"
    rf"(?P=unit) ratio=(?P<ratio>{NUMBER}) goal=(?P<goal>info|(?P<op>[<>]=)(?P<target>\d+(?:\.\d+)?)"
    rf"(?P<goal_unit>\S*))"
)
# Which way is better, by unit: a time, a share, a size, a loss or a count of runs or simulations is better lower,
# a rate higher. A unit missing here is a problem of the line until it is added.
LOWER_IS_BETTER = {"s", "ms", "%", "MB", "B/msg", "NLL", "runs", "sims"}
HIGHER_IS_BETTER = {"msg/s", "graphs/s", "windows/s", "/s"}


def parse(line: str) -> dict[str, str] | None:
    """The fields of a whole BENCH line (nothing before or after it); None if it is not one."""
    match = BENCH_LINE.fullmatch(line.strip())
    return match.groupdict() if match else None


def recorded(text: str) -> list[tuple[int, str, dict[str, str] | None]]:
    """Every BENCH line quoted in a document (line number, the text from BENCH on, its fields or None when it is
    not well formed); what follows a line's goal (a note such as "(was 1.88)") is not part of it."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for start in re.finditer(r"BENCH (?!<)\S+ value=", line):
            quoted = line[start.start() :]
            match = BENCH_LINE.match(quoted)
            found.append((number, quoted, match.groupdict() if match else None))
    return found


def printed_interval(text: str) -> tuple[float, float]:
    """The numbers that print as ``text`` (rounded to its digits)."""
    if text.lstrip("-") == "inf":
        return (math.inf, math.inf) if not text.startswith("-") else (-math.inf, -math.inf)
    number = Decimal(text)
    half = Decimal(1).scaleb(number.as_tuple().exponent) / 2
    return float(number - half), float(number + half)


def quotient_interval(top: tuple[float, float], bottom: tuple[float, float]) -> tuple[float, float]:
    """Every top / bottom for top and bottom in their intervals; unbounded when bottom may be 0."""
    if bottom[0] <= 0 <= bottom[1]:
        return -math.inf, math.inf
    corners = [t / b for t in top for b in bottom]
    return min(corners), max(corners)


def ratio_forms(fields: dict[str, str]) -> set[str]:
    """Which of value/baseline and baseline/value the printed ratio is, given the printed digits (both when the
    two are too close to tell)."""
    value, baseline = printed_interval(fields["value"]), printed_interval(fields["baseline"])
    ratio = printed_interval(fields["ratio"])
    forms = set()
    for form, (low, high) in (
        ("value/baseline", quotient_interval(value, baseline)),
        ("baseline/value", quotient_interval(baseline, value)),
    ):
        if low <= ratio[1] and ratio[0] <= high:
            forms.add(form)
    return forms


def problems(fields: dict[str, str]) -> list[str]:
    """What is wrong with a parsed BENCH line: a ratio that is neither value/baseline nor baseline/value, a unit
    whose better direction is unknown, a goal in another unit than the line's or pointing the way worse goes."""
    unit, found = fields["unit"], []
    if unit not in LOWER_IS_BETTER | HIGHER_IS_BETTER:
        return [f"unit {unit!r}: not known whether lower or higher is better (benchlines.py)"]
    lower_is_better = unit in LOWER_IS_BETTER
    forms = ratio_forms(fields)
    if not forms:
        found.append(
            f"ratio {fields['ratio']} is neither value/baseline nor baseline/value "
            f"({fields['value']}, {fields['baseline']})"
        )
    if fields["goal"] == "info":
        return found
    better_op = "<=" if lower_is_better else ">="
    if fields["goal_unit"]:
        if fields["goal_unit"] != unit:
            found.append(f"goal {fields['goal']} is in {fields['goal_unit']!r}, the line in {unit!r}")
        elif fields["op"] != better_op:
            better = "lower" if lower_is_better else "higher"
            found.append(f"goal {fields['goal']} on the value, but {unit} is better {better}")
    elif len(forms) == 1:
        grows_with_value = forms == {"value/baseline"}
        ratio_op = better_op if grows_with_value else {"<=": ">=", ">=": "<="}[better_op]
        if fields["op"] != ratio_op:
            found.append(
                f"goal {fields['goal']} on the ratio ({forms.pop()}), but a better {unit} makes it "
                f"{'smaller' if ratio_op == '<=' else 'larger'}"
            )
    return found


def goal_met(fields: dict[str, str]) -> bool | None:
    """Whether the printed figures meet the goal (on the value for a goal with a unit, else on the ratio); None for
    an info line."""
    if fields["goal"] == "info":
        return None
    measured = float(fields["value"] if fields["goal_unit"] else fields["ratio"])
    target = float(fields["target"])
    return measured <= target if fields["op"] == "<=" else measured >= target
