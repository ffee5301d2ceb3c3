"""Target support sizes: a fixed count, a fraction of d, c * d^sigma or c * (ln d)^p.

Rules are written as plain strings in configs and on the command line and parsed by regular
expressions (never evaluated):

    "1000"          fixed           1000 points
    "0.1d", "0.1*d" fraction        round(0.1 d)
    "16*d^0.5", "16*sqrt(d)", "d^0.5"          power    round(c d^sigma)
    "20*ln(d)^2", "120*ln(d)", "(ln d)^2"      polylog  round(c (ln d)^p)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_NUMBER = r"(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
_COEF = rf"(?:{_NUMBER}\s*\*?\s*)?"
_PATTERNS = {
    "fixed": re.compile(rf"^{_NUMBER}$"),
    "fraction": re.compile(rf"^{_NUMBER}\s*\*?\s*d$"),
    "power": re.compile(rf"^{_COEF}(?:d\s*(?:\^|\*\*)\s*{_NUMBER}|sqrt\(\s*d\s*\))$"),
    "polylog": re.compile(rf"^{_COEF}(?:ln\s*\(\s*d\s*\)|\(\s*ln\s*d\s*\)|ln\s*d)(?:\s*(?:\^|\*\*)\s*{_NUMBER})?$"),
}


@dataclass(frozen=True)
class SizeRule:
    """A rule d -> d'. ``kind`` is fixed, fraction, power or polylog."""

    kind: str
    coef: float
    exponent: float = 1.0

    def resolve(self, d: int) -> int:
        """The target size for d points (at least 1; the caller clamps to N(m,k))."""
        if self.kind == "fixed":
            value = self.coef
        elif self.kind == "fraction":
            value = self.coef * d
        elif self.kind == "power":
            value = self.coef * d**self.exponent
        else:
            value = self.coef * math.log(d) ** self.exponent if d > 1 else 1.0
        return max(1, int(round(value)))

    def __str__(self) -> str:
        coef = f"{self.coef:g}"
        return {
            "fixed": coef,
            "fraction": f"{coef}*d",
            "power": f"{coef}*d^{self.exponent:g}",
            "polylog": f"{coef}*ln(d)^{self.exponent:g}",
        }[self.kind]


def parse_size(spec: int | float | str | SizeRule) -> SizeRule:
    """A SizeRule from an int (fixed), a float in (0, 1) (fraction), a string rule, or a SizeRule."""
    if isinstance(spec, SizeRule):
        return spec
    if isinstance(spec, bool):
        raise ValueError(f"size must be a count or a rule such as '0.1d'; got {spec!r}")
    if isinstance(spec, int):
        if spec < 1:
            raise ValueError(f"size must be at least 1; got {spec}")
        return SizeRule("fixed", float(spec))
    if isinstance(spec, float):
        if 0 < spec < 1:
            return SizeRule("fraction", spec)
        if spec >= 1 and spec.is_integer():
            return SizeRule("fixed", spec)
        raise ValueError(f"size {spec!r}: a float must be a fraction in (0, 1) or a whole count")
    if not isinstance(spec, str):
        raise ValueError(f"size must be an int or a rule string; got {type(spec).__name__}")
    text = spec.strip().lower().replace(" ", "")
    for kind, pattern in _PATTERNS.items():
        match = pattern.match(text)
        if match:
            return _rule_from_match(kind, match.groups(), spec)
    raise ValueError(
        f"size {spec!r} is not a rule; expected a count ('1000'), a fraction ('0.1d'), a power "
        "('16*d^0.5', '16*sqrt(d)') or a polylog ('20*ln(d)^2')"
    )


def _rule_from_match(kind: str, groups: tuple, spec: str) -> SizeRule:
    numbers = [float(g) if g is not None else None for g in groups]
    if kind in ("fixed", "fraction"):
        rule = SizeRule(kind, numbers[0])
        if kind == "fixed" and (not numbers[0].is_integer() or numbers[0] < 1):
            raise ValueError(f"size {spec!r}: a fixed size must be a whole number >= 1")
        if kind == "fraction" and not 0 < numbers[0] <= 1:
            raise ValueError(f"size {spec!r}: a fraction of d must be in (0, 1]")
        return rule
    coef = numbers[0] if numbers[0] is not None else 1.0
    if kind == "power":
        exponent = numbers[1] if numbers[1] is not None else 0.5
        if not 0 < exponent <= 1:
            raise ValueError(f"size {spec!r}: the power of d must be in (0, 1]")
    else:
        exponent = numbers[1] if numbers[1] is not None else 1.0
        if exponent <= 0:
            raise ValueError(f"size {spec!r}: the power of ln d must be positive")
    if coef <= 0:
        raise ValueError(f"size {spec!r}: the coefficient must be positive")
    return SizeRule(kind, coef, exponent)
