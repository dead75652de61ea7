"""The report from hand-built analysis data: both files, every figure, and a real headless
browser (Debian's Chromium driven by Playwright) opening the HTML without errors."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.synthetic_stage_outputs import write_stage_outputs
from tomrepro.report.figures import FIGURES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    from tomrepro.cli import main

    root = tmp_path_factory.mktemp("report")
    data = write_stage_outputs(root / "data", effect=True)
    assert main(["analyse", "--profile", "smoke", "--data", str(data)]) == 0
    assert (
        main(["report", "--profile", "smoke", "--data", str(data), "--out", str(root / "r")]) == 0
    )
    return root / "r"


def test_report_has_claims_table_first_and_every_figure(report_dir):
    md = (report_dir / "report.md").read_text()
    first_table = md.index("| Claim | Scope |")
    assert md.index("## Claims") < first_table < md.index("## C1")
    assert md.index("## C1") < md.index("## Deviations") < md.index("## Run metadata")
    linked = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", md)
    assert sorted(Path(p).stem for p in linked) == sorted(s.name for s in FIGURES)
    assert all((report_dir / p).is_file() for p in linked)
    for needle in ("git revision", "version: torch", "device", "profile"):
        assert needle in md


def test_html_is_self_contained(report_dir):
    html = (report_dir / "index.html").read_text()
    sources = re.findall(r'src="([^"]+)"', html)
    assert len(sources) == len(FIGURES)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(href|src)="(https?:|file:|/)', html)


@pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",
    reason="Chromium is not installed (`apt-get install chromium`; .ci/run installs it)",
)
def test_report_opens_in_a_headless_browser_without_errors(report_dir):
    sync_api = pytest.importorskip("playwright.sync_api")
    assert CHROMIUM is not None, "CI must have Chromium for the browser test"
    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page()
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: (
                problems.append(f"console {msg.type}: {msg.text}")
                if msg.type in ("error", "warning")
                else None
            ),
        )
        page.on("requestfailed", lambda req: problems.append(f"failed request: {req.url}"))
        page.goto((report_dir / "index.html").resolve().as_uri(), wait_until="load")
        claim_rows = page.locator("#claims-table tbody tr").count()
        verdicts = page.locator("#claims-table td.verdict").all_inner_texts()
        images = page.eval_on_selector_all(
            "figure img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
        )
        figure_ids = page.eval_on_selector_all("figure", "fs => fs.map(f => f.id)")
        browser.close()
    assert problems == []
    # Every evidence row of the effect data is reproduced; C4 sits at InvertedPendulum's ceiling.
    assert claim_rows == 10
    assert {v.split(";")[0] for v in verdicts} == {
        "reproduced",
        "not applicable",
        "sanity check passed",
    }
    assert sorted(figure_ids) == sorted(f"fig-{s.name}" for s in FIGURES)
    assert all(complete and width > 100 and height > 100 for complete, width, height in images)


def test_report_of_data_without_effect_shows_other_verdicts_and_escapes_text(tmp_path):
    from tomrepro.analysis.claims import ClaimResult
    from tomrepro.cli import main
    from tomrepro.core.config import load_profile
    from tomrepro.report.build import report_blocks
    from tomrepro.report.document import to_html

    data = write_stage_outputs(tmp_path / "data", effect=False)
    assert main(["analyse", "--profile", "smoke", "--data", str(data)]) == 0
    assert main(["report", "--profile", "smoke", "--data", str(data), "--out", str(tmp_path)]) == 0
    html = (tmp_path / "index.html").read_text()
    # Six collect runs and ten paired seeds with no effect decide C1-C3 the other way (C6's
    # finite-MDP fit comparison does not depend on the effect switch).
    assert html.count('<tr class="not-reproduced">') == 6
    odd = ClaimResult(
        "C1", "<b>&scope", "primary", "not reproduced", "m", "r", None, 0, evidence={"why": "<i>"}
    )
    page = to_html(report_blocks(load_profile("smoke"), [odd], {}, {}, tmp_path), "t")
    assert '<tr class="not-reproduced">' in page
    assert "&lt;b&gt;&amp;scope" in page and "<b>&scope" not in page and "<i>" not in page


def test_report_without_analysis_is_one_line_error(tmp_path, run_cli):
    code, _, err = run_cli("report", "--profile", "smoke", "--data", str(tmp_path))
    assert code == 2 and "no analysis found" in err
    assert len(err.strip().splitlines()) == 1
