"""The one learner registry: a learner declared in this test alone (no edit of the package)
appears in every list, choice, check and stage, and unknown names are refused everywhere."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
import yaml
from pydantic import Field

from tests.conftest import REPO_ROOT, copied_run
from tomrepro.core.config import load_profile, profile_from_dict, with_overrides
from tomrepro.core.config_section import PositiveInt, Section
from tomrepro.core.errors import ConfigError
from tomrepro.core.learners import (
    LearnerSpec,
    get_learner,
    learner_names,
    learner_sections,
    registered,
)
from tomrepro.learning.devices import resolve_device
from tomrepro.learning.model_learners import (
    LearnerPlan,
    ModelLearner,
    PlanInputs,
    build_learner,
)
from tomrepro.loops.mbpo import MBPORun
from tomrepro.loops.offline_study import OfflineStudy
from tomrepro.report.figures import _order


class RecentOnlyConfig(Section):
    """Weight 1 on the last `rows` transitions, 0 elsewhere."""

    rows: PositiveInt = Field(150, description="How many of the newest transitions count.")


class RecentOnlyLearner(ModelLearner):
    def plan(self, inputs: PlanInputs) -> LearnerPlan:
        n = len(inputs.columns["rewards"])
        w = np.zeros(n)
        w[-self.params.rows :] = 1.0
        w /= w.mean()
        return LearnerPlan(w, None, w, {"rows": self.params.rows})


TOY = LearnerSpec(
    "recent-only",
    "weight 1 on the newest transitions",
    RecentOnlyLearner,
    section="recent_only",
    params=RecentOnlyConfig,
)


@pytest.fixture
def toy():
    with registered(TOY) as spec:
        yield spec


@pytest.fixture(scope="module")
def smoke_buffer(smoke_collect, tmp_path_factory):
    return copied_run(smoke_collect, tmp_path_factory)


def test_toy_learner_appears_in_choices_config_and_report_order(toy, run_cli):
    assert learner_names()[-1] == "recent-only" and get_learner("recent-only") is toy
    assert learner_sections()["recent_only"] is RecentOnlyConfig
    for command in ("mbpo", "continue", "weights"):
        code, out, _ = run_cli(command, "--help")
        assert code == 0 and "recent-only" in out, command
    raw = load_profile("smoke").model_dump()
    raw["mbpo"]["learners"] = ["mle", "recent-only"]
    raw["recent_only"] = {"rows": 50}
    profile = profile_from_dict(raw)
    assert profile.section("recent_only").rows == 50
    assert (
        profile_from_dict({k: v for k, v in raw.items() if k != "recent_only"}).section(
            "recent_only"
        )
        == RecentOnlyConfig()
    )
    with pytest.raises(ConfigError, match=r"recent_only\.rows: Input should be greater than 0"):
        profile_from_dict({**raw, "recent_only": {"rows": 0}})
    assert _order(["recent-only", "tom", "mle", "other"]) == ["mle", "tom", "recent-only", "other"]


def test_toy_learner_is_gone_outside_its_block(run_cli):
    assert "recent-only" not in learner_names()
    raw = load_profile("smoke").model_dump()
    raw["mbpo"]["learners"] = ["recent-only"]
    with pytest.raises(ConfigError, match="unknown learner 'recent-only'"):
        profile_from_dict(raw)
    with pytest.raises(ConfigError, match="recent_only: unknown key"):
        profile_from_dict({**load_profile("smoke").model_dump(), "recent_only": {"rows": 5}})


def test_toy_learner_runs_in_the_offline_study(toy, smoke_buffer, tmp_path):
    profile = with_overrides(
        load_profile("smoke"),
        "offline_study",
        snapshots=(4,),
        learners=("mle", "recent-only"),
        seeds=(0,),
    )
    ds_path = OfflineStudy(profile, smoke_buffer, tmp_path / "study", progress=False).run()
    ds = xr.load_dataset(ds_path, engine="h5netcdf")
    assert list(ds.learner.values) == ["mle", "recent-only"]
    ess = ds.ess_share.sel(learner="recent-only").item()
    rows = ds.env_step.sel(snapshot=4).item()
    assert ess == pytest.approx(150 / rows)  # its weights were the ones used
    assert np.isfinite(ds.on_policy_state_mse.sel(learner="recent-only").item())
    # Another parameter is another config: refused without --overwrite, nothing destroyed.
    changed = with_overrides(profile, "recent_only", rows=100)
    with pytest.raises(Exception, match="different config"):
        OfflineStudy(changed, smoke_buffer, tmp_path / "study", progress=False).run()
    assert ds_path.exists()


def test_toy_learner_runs_in_mbpo_and_its_parameter_is_in_the_fingerprint(toy, tmp_path):
    profile = with_overrides(load_profile("smoke"), "mbpo", env_steps=400)
    out = tmp_path / "run"
    run = MBPORun(profile, out, learner="recent-only", progress=False)
    run.run()
    status = json.loads((out / "run.json").read_text())
    assert status["complete"] and status["config"]["learner"]["params"] == {"rows": 150}
    assert MBPORun(profile, out, learner="recent-only", progress=False).finished()
    changed = with_overrides(profile, "recent_only", rows=120)
    assert not MBPORun(changed, out, learner="recent-only", progress=False).finished()
    assert status["summary"]["model_rounds"] > 0


def test_unknown_learner_is_refused_in_every_entry_point(smoke_buffer, tmp_path, run_cli):
    snapshot = (smoke_buffer, "--snapshot", "1")
    for args in (
        ("mbpo", "--profile", "smoke", "--learner", "nope", "--out", tmp_path / "a"),
        ("continue", *snapshot, "--learner", "nope", "--out", tmp_path / "b"),
        ("weights", *snapshot, "--learner", "nope", "--out", tmp_path / "c.npz"),
        ("sweep", "--profile", "smoke", "--kind", "scratch", "--learners", "mle,nope",
         "--out", tmp_path / "d"),
    ):  # fmt: skip
        code, _, err = run_cli(*args)
        assert code == 2 and err.count("\n") == 1 and "nope" in err, (args, err)
        assert not any(tmp_path.iterdir()), args
    for section in ("mbpo", "offline_study"):
        raw = load_profile("smoke").model_dump()
        raw[section]["learners"] = ["mle", "nope"]
        with pytest.raises(ConfigError, match=f"{section}.learners: unknown learner 'nope'"):
            profile_from_dict(raw)
    with pytest.raises(ConfigError, match="unknown learner 'nope'; choose from mle, tom"):
        build_learner("nope", load_profile("smoke"), 0, resolve_device("cpu"))


def test_a_learner_needing_a_critic_is_refused_where_there_is_none(smoke_buffer, tmp_path, run_cli):
    raw = load_profile("smoke").model_dump()
    raw["offline_study"]["learners"] = ["vagram"]
    with pytest.raises(ConfigError, match="'vagram' needs a critic"):
        profile_from_dict(raw)
    code, _, err = run_cli(
        "weights", smoke_buffer, "--snapshot", "1", "--learner", "vagram",
        "--out", tmp_path / "w.npz", "--profile", "smoke",
    )  # fmt: skip
    assert code == 2 and "needs a critic" in err and not (tmp_path / "w.npz").exists()


def test_learner_stages_track_every_learner_section_as_a_dvc_param():
    """A new learner's section must rerun the stages that run learners when it changes."""
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    for name in ("offline_study", "mbpo_continue", "mbpo_scratch"):
        (params,) = [
            p["pipelines/${profile}.yaml"] for p in stages[name]["params"] if isinstance(p, dict)
        ]
        missing = set(learner_sections()) - set(params)
        assert not missing, f"dvc.yaml stage {name} does not track the sections {missing}"
