"""One row of the claims table and the helpers that build rows from decisions."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from tomrepro.analysis.statistics import Decision, Estimate, Verdict

Role = Literal["primary", "secondary", "comparison", "aggregate", "sanity"]

STATEMENTS = {
    "C1": "TOM's weights focus on policy-relevant, recent experience",
    "C2": "TOM models are more accurate where the current policy goes",
    "C3": "TOM speeds up learning of the backbone (MBPO)",
    "C4": "TOM reaches the same asymptotic return as MLE (earlier version: a higher one)",
    "C5": "the dual-RL estimator recovers the true occupancy ratio",
    "C6": "the TOM objective lower-bounds log J(pi), and weighting the model fit by it helps",
}


@dataclass(frozen=True)
class ClaimResult:
    """One row of the claims table: the verdict with the numbers and rule it came from."""

    claim_id: str
    scope: str
    role: Role
    verdict: Verdict
    measure: str
    rule: str
    estimate: Estimate | None
    units: int
    sesoi: float | None = None
    p_value: float | None = None
    power: float | None = None
    units_needed: int | None = None
    underpowered: bool = False
    note: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def statement(self) -> str:
        return STATEMENTS[self.claim_id]

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ClaimResult:
        fields = {k: v for k, v in raw.items() if k != "statement"}
        est = fields.pop("estimate")
        return cls(estimate=Estimate(**est) if est else None, **fields)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["statement"] = self.statement
        out["estimate"] = asdict(self.estimate) if self.estimate else None
        return out


def make_row(
    claim_id: str,
    scope: str,
    role: Role,
    measure: str,
    rule: str,
    decision: Decision,
    evidence: dict[str, Any],
    display=None,
) -> ClaimResult:
    """A claims row from a decision; `display` maps the effect scale to the shown one."""
    est, sesoi = decision.estimate, decision.sesoi
    if display is not None:
        est = est.map(display) if est is not None else None
        sesoi = display(sesoi)
    return ClaimResult(
        claim_id,
        scope,
        role,
        decision.verdict,
        measure,
        rule,
        est,
        decision.units,
        sesoi,
        decision.p_value,
        decision.power,
        decision.units_needed,
        decision.underpowered,
        decision.note,
        evidence,
    )


def lacking(claim_id: str, scope: str, role: Role, measure: str, why: str) -> ClaimResult:
    return ClaimResult(
        claim_id, scope, role, "indicative", measure, "", None, 0, note=why, evidence={"why": why}
    )


def ratio_display(x: float) -> float:
    """log(MLE / other) -> relative reduction 1 - other / MLE (monotone increasing)."""
    return 1.0 - math.exp(-x) if math.isfinite(x) else (1.0 if x > 0 else -math.inf)


def sanity_row(
    claim_id: str, scope: str, measure: str, rule: str, worst: float, ok: bool, units: int
) -> ClaimResult:
    """A row whose rule holds by construction: it checks the arithmetic, not the claim."""
    verdict: Verdict = "sanity check passed" if ok else "sanity check failed"
    est = Estimate(worst, worst, worst)
    return ClaimResult(claim_id, scope, "sanity", verdict, measure, rule, est, units)
