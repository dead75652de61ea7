"""`tomrepro report`: figures plus `index.html` and `report.md` from one profile's analysis."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tomrepro.analysis import datasets
from tomrepro.analysis.analyse import load_claims
from tomrepro.analysis.claim_rows import STATEMENTS, ClaimResult
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
# Claims measured exactly (finite MDPs): a number without an interval.
EXACT_CLAIMS = ("C5", "C6")


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
    if r.claim_id in EXACT_CLAIMS:
        return _fmt(e.value)
    return f"{_fmt(e.value)} [{_fmt(e.low)}, {_fmt(e.high)}] ({100 * confidence:g}% CI)"


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
) -> list[Block]:
    conf = profile.analysis.confidence
    counts = {v: sum(r.verdict == v for r in claims) for v in ("reproduced", "not reproduced")}
    blocks: list[Block] = [
        Heading(1, f"TOM reproduction report: profile {profile.name}"),
        Paragraph(
            f"{len(claims)} judged claim rows: {counts['reproduced']} reproduced, "
            f"{counts['not reproduced']} not reproduced, "
            f"{len(claims) - sum(counts.values())} inconclusive. Every verdict is computed from "
            "the measured data by the rule given with it."
        ),
        Heading(2, "Claims", "claims"),
        Table(
            ("Claim", "Scope", "Statement", "Verdict", "Measure", "Estimate", "n"),
            tuple(
                (
                    r.claim_id,
                    r.scope,
                    r.statement,
                    r.verdict,
                    r.measure,
                    _estimate_text(r, conf),
                    str(r.units),
                )
                for r in claims
            ),
            html_id="claims-table",
            row_classes=tuple(r.verdict.replace(" ", "-") for r in claims),
        ),
    ]
    blocks.append(
        Paragraph(
            f"Intervals: {100 * conf:g}% expanded percentile bootstrap "
            f"({profile.analysis.bootstrap_samples} resamples; Hesterberg's small-sample "
            "expansion), over seeds for MBPO rows and over snapshot x seed cells for the offline "
            "study. Those cells share one collect run, and continuations of one snapshot share "
            "their start, so the intervals describe variation over seeds given that data. With "
            "n = 3 to 5 units no bootstrap interval reaches its nominal coverage (3 units: at "
            "most about 75%), so such verdicts are indicative. Rows are judged one at a time, "
            "without a correction for testing several."
        )
    )
    for claim_id, statement in STATEMENTS.items():
        blocks.append(Heading(2, f"{claim_id}: {statement}", claim_id.lower()))
        for r in (r for r in claims if r.claim_id == claim_id):
            blocks += [
                Heading(3, f"{r.scope}: {r.verdict}"),
                Paragraph(f"{r.measure}: {_estimate_text(r, conf)}; n = {r.units}."),
                Paragraph(f"Rule: {r.rule}."),
            ]
            if r.evidence:
                blocks.append(Bullets(tuple(_evidence_items(r.evidence))))
        blocks += _figures(figures, claim_id)
    blocks += [
        Heading(2, "Wall time", "wall-time"),
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
        ("collect", f"{profile.collect.task}, {profile.collect.env_steps} env steps"),
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
    blocks = report_blocks(profile, claims, figures, stage_times, PROJECT_ROOT)
    html_path, md_path = out_dir / "index.html", out_dir / "report.md"
    title = f"TOM reproduction report ({profile.name})"
    with atomic_path(html_path) as tmp:
        tmp.write_text(to_html(blocks, title))
    with atomic_path(md_path) as tmp:
        tmp.write_text(to_markdown(blocks, out_dir))
    return html_path, md_path
