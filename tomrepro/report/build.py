"""`tomrepro report`: figures plus `index.html` and `report.md` from one profile's analysis."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, get_args

from tomrepro.analysis import datasets
from tomrepro.analysis.analyse import HEADLINE, load_claims
from tomrepro.analysis.claim_rows import STATEMENTS, ClaimResult
from tomrepro.analysis.statistics import Verdict
from tomrepro.core.atomic import atomic_path, make_parent
from tomrepro.core.config import ProfileConfig
from tomrepro.core.deviations import applicable_deviations
from tomrepro.core.errors import TomreproError
from tomrepro.core.stage_time import read_stage_times
from tomrepro.report import metadata
from tomrepro.report.document import (
    Block,
    Bullets,
    Figure,
    Heading,
    Paragraph,
    Table,
    to_html,
    to_markdown,
)
from tomrepro.report.figures import FIGURES, draw_all

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VERDICT_ORDER: tuple[str, ...] = get_args(Verdict)


def _fmt(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.3g}" if x == 0 or 1e-3 <= abs(x) < 1e5 else f"{x:.2e}"
    return str(x)


def _estimate_text(r: ClaimResult, confidence: float) -> str:
    e = r.estimate
    if e is None:
        return "n/a"
    if r.role == "sanity" or e.low == e.high == e.value:
        return _fmt(e.value)
    return f"{_fmt(e.value)} [{_fmt(e.low)}, {_fmt(e.high)}]"


def _verdict_text(r: ClaimResult) -> str:
    """The verdict with what qualifies it: underpowered, power and units needed, a note."""
    parts: list[str] = [r.verdict]
    if r.underpowered:
        parts.append("underpowered")
    if r.verdict in ("inconclusive", "indicative") and r.power is not None:
        needed = r.units_needed if r.units_needed is not None else "> 1000"
        parts.append(f"power {r.power:.2f} at the SESOI, {needed} units needed")
    if r.note:
        parts.append(r.note)
    return "; ".join(parts)


def _evidence_items(evidence: dict[str, Any], prefix: str = "") -> list[str]:
    items = []
    for key, value in evidence.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and set(value) == {"value", "low", "high"}:
            items.append(
                f"{name}: {_fmt(value['value'])} [{_fmt(value['low'])}, {_fmt(value['high'])}]"
            )
        elif isinstance(value, dict):
            items += _evidence_items(value, f"{name} / ")
        elif isinstance(value, list):
            items.append(f"{name}: [{', '.join(_fmt(v) for v in value)}]")
        else:
            items.append(f"{name}: {_fmt(value)}")
    return items


def report_blocks(
    profile: ProfileConfig,
    claims: list[ClaimResult],
    figures: dict[str, Path],
    stage_times: dict[str, dict],
    root: Path,
    sac_update_ms: float | None = None,
) -> list[Block]:
    conf = profile.analysis.confidence
    counts = {v: sum(r.verdict == v for r in claims) for v in VERDICT_ORDER}
    summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    blocks: list[Block] = [
        Heading(1, f"TOM reproduction report: profile {profile.name}"),
        Paragraph(
            f"{len(claims)} claim rows: {summary}. Every verdict is computed from the measured "
            "data by the rule given with it, fixed in the profile before the data."
        ),
        Heading(2, "Claims", "claims"),
        Table(
            ("Claim", "Scope", "Role", "Verdict", "Measure", "Estimate", "SESOI", "n"),
            tuple(
                (
                    r.claim_id,
                    r.scope,
                    r.role,
                    _verdict_text(r),
                    r.measure,
                    _estimate_text(r, conf),
                    _fmt(r.sesoi),
                    str(r.units),
                )
                for r in claims
            ),
            html_id="claims-table",
            row_classes=tuple(r.verdict.replace(" ", "-") for r in claims),
        ),
        Paragraph(
            f"Intervals: exact {100 * conf:g}% sign-flip intervals of the mean per-unit effect "
            "(the order statistics of all subset means; random subsets above 16 units), signed "
            "so that the claimed direction is positive. Units: independent collect runs for the "
            "offline study (its snapshots and model seeds averaged inside each run), seeds "
            "paired across learners for MBPO, random MDPs for C5 and C6. Reproduced: the "
            "interval lies above 0; not reproduced: it lies below the smallest effect size of "
            "interest (SESOI); inconclusive: neither (underpowered when wider than twice the "
            "SESOI); indicative: fewer units than the claim's minimum, so no verdict. Per-task "
            "rows of one claim are Holm-corrected. Sanity rows check identities and theorems: "
            "they catch bugs and are not evidence."
        ),
    ]
    for claim_id, statement in STATEMENTS.items():
        blocks.append(Heading(2, f"{claim_id}: {statement}", claim_id.lower()))
        for r in (r for r in claims if r.claim_id == claim_id):
            blocks += [
                Heading(3, f"{r.scope}: {_verdict_text(r)}"),
                Paragraph(
                    f"{r.measure}: {_estimate_text(r, conf)}; n = {r.units}"
                    + (f"; one-sided p = {_fmt(r.p_value)}" if r.p_value is not None else "")
                    + "."
                ),
                Paragraph(f"Rule: {r.rule or 'none applied: ' + r.note}."),
            ]
            if r.evidence:
                blocks.append(Bullets(tuple(_evidence_items(r.evidence))))
        blocks += _figures(figures, claim_id)
    speed = (
        f"Reference speed of the machine the analysis ran on: one SAC update (256 x 256, batch "
        f"256) took {sac_update_ms:.1f} ms; read wall times as ratios to it."
        if sac_update_ms is not None
        else "No reference speed was recorded with this analysis."
    )
    blocks += [
        Heading(2, "Wall time", "wall-time"),
        Paragraph(speed),
        Table(
            ("Stage", "Wall time (min)", "Finished at"),
            tuple(
                (name, f"{t['wall_seconds'] / 60:.1f}", t["finished_at"])
                for name, t in stage_times.items()
            ),
            html_id="stage-times",
        ),
    ]
    blocks += _figures(figures, "time")
    blocks += [
        Heading(2, "Deviations from the official code", "deviations"),
        Bullets(tuple(d.describe(profile) for d in applicable_deviations(profile))),
        Heading(2, "Run metadata", "metadata"),
        Table(("Item", "Value"), tuple(_metadata_rows(profile, root)), html_id="metadata"),
    ]
    return blocks


def _figures(figures: dict[str, Path], claim: str) -> list[Block]:
    """The drawn figures that illustrate `claim`, in FIGURES order."""
    return [
        Figure(figures[s.name], s.caption, s.name)
        for s in FIGURES
        if s.claim == claim and s.name in figures
    ]


def _metadata_rows(profile: ProfileConfig, root: Path) -> list[tuple[str, str]]:
    rows = [
        ("profile", profile.name),
        ("master seed", str(profile.seed)),
        (
            "collect",
            f"{profile.collect.task}, {profile.collect.env_steps} env steps, "
            f"{len(profile.collect.seeds)} runs (seeds {list(profile.collect.seeds)})",
        ),
    ]
    if profile.offline_study is not None:
        s = profile.offline_study
        rows.append(("offline study", f"snapshots {list(s.snapshots)}, seeds {list(s.seeds)}"))
    if profile.mbpo is not None:
        m = profile.mbpo
        rows.append(
            (
                "MBPO",
                f"tasks {list(m.tasks)}, learners {list(m.learners)}, seeds {list(m.seeds)}",
            )
        )
    rows += [
        ("device", metadata.device_description(profile.device)),
        ("git revision", metadata.git_revision(root)),
        ("generated at", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())),
    ]
    rows += [(f"version: {k}", v) for k, v in metadata.versions().items()]
    return rows


def build_report(profile: ProfileConfig, data_dir: Path, out_dir: Path) -> tuple[Path, Path]:
    """Read `data_dir/analysis`, judge the claims, draw figures, write index.html and report.md."""
    analysis_dir = data_dir / "analysis"
    if not (analysis_dir / "claims.json").is_file():
        raise TomreproError(f"{analysis_dir}: no analysis found (run `tomrepro analyse` first)")
    data = datasets.load(analysis_dir)
    claims = [ClaimResult.from_json(c) for c in load_claims(analysis_dir)["claims"].values()]
    # In the order the stages finished, which is the pipeline's order.
    stage_times = dict(
        sorted(
            read_stage_times(data_dir / "stage_times").items(),
            key=lambda item: str(item[1].get("finished_at", "")),
        )
    )
    figure_dir = out_dir / "figures"
    make_parent(figure_dir / "x")
    figures = draw_all(data, claims, stage_times, figure_dir)
    headline = analysis_dir / HEADLINE
    speed = json.loads(headline.read_text()).get("sac_update_ms") if headline.is_file() else None
    blocks = report_blocks(profile, claims, figures, stage_times, PROJECT_ROOT, speed)
    html_path, md_path = out_dir / "index.html", out_dir / "report.md"
    title = f"TOM reproduction report ({profile.name})"
    with atomic_path(html_path) as tmp:
        tmp.write_text(to_html(blocks, title))
    with atomic_path(md_path) as tmp:
        tmp.write_text(to_markdown(blocks, out_dir))
    return html_path, md_path
