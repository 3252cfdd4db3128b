"""One spend ledger: the sidebar, History, Evaluate, the Markdown report and `pgs` summaries all show the
session's folded spend (core/state.py `SessionState.spend` and its parts `ledger`), and the ledger counts
every request the model server actually received."""

from __future__ import annotations

import re

import pytest

from core import bundle
from core.cli.sessions import summary
from core.engine import StepContext
from core.step_runner import StepRunner
from tests.fake_model import FakeModel
from tests.test_app import check, click, create_session, goto, new_app, open_session


@pytest.fixture
def env(app_test_env):
    return app_test_env


@pytest.fixture
def served(monkeypatch):
    """Count the requests the fake server answers (the ground truth the ledger must equal), and make every
    phase flush its interim spend after each call, as a slow model does (the bug: the baseline's calls all
    went to interim 'spend' events, so History listed the baseline as 0 calls)."""
    counter = {"n": 0}
    real = FakeModel.acomplete

    async def acomplete(self, req):
        counter["n"] += 1
        return await real(self, req)

    monkeypatch.setattr(FakeModel, "acomplete", acomplete)
    real_context = StepRunner.context

    def context(self, *a, **kw) -> StepContext:
        ctx = real_context(self, *a, **kw)
        ctx.flush_every_s = 0.0
        return ctx

    monkeypatch.setattr(StepRunner, "context", context)
    return counter


def _money(x: float) -> str:
    return f"${x:,.4f}" if x < 1 else f"${x:,.2f}"


def _accept_first(at, index: int) -> None:
    accept = [b for b in at.button if (b.key or "").startswith(f"accept_s{index}_")]
    assert accept, "no candidate to accept"
    check(accept[0].click().run())
    labels = {b.key: b.label for b in at.button}
    click(at, "confirm" if "confirm" in labels else "override")


def test_every_spend_figure_on_every_page_is_the_ledger(env, served):
    at = new_app()
    sid = create_session(at, val=12)  # the baseline runs on creation
    goto(at, "optimize")
    for index in (1, 2):
        click(at, "run_step")
        click(at, "continue_step")  # manual steps pause after the answers
        _accept_first(at, index)
    goto(at, "evaluate")
    at.number_input(key="eval_limit").set_value(8)
    check(at.run())
    click(at, "run_eval")
    click(at, "reveal_test")

    s = open_session(env, sid)  # the log folded afresh: the ledger
    total, ledger = s.spend, s.ledger
    assert [st.outcome for st in s.steps][:2] and len(s.steps) == 2
    assert total.calls == served["n"] and total.failed == 0  # every request the server answered, once
    assert list(ledger)[:3] == ["baseline", "step 1", "step 2"] and "test" in ledger
    assert sum(p.calls for p in ledger.values()) == total.calls
    assert sum(p.cost_usd for p in ledger.values()) == pytest.approx(total.cost_usd)
    assert ledger["baseline"].calls == 12
    for st in s.steps:
        assert st.spend is ledger[f"step {st.index}"]
    reveal = next(ev for ev in s.events if ev["type"] == "test_revealed")
    assert ledger["test"].calls == reveal["spend"]["calls"] > 0

    # Evaluate: this run's figures and every run's, from the same ledger
    captions = " ".join(c.value for c in at.caption)
    assert f"These results: {reveal['spend']['calls']:,} calls, {_money(reveal['spend']['cost_usd'])}" in captions
    assert f"every Evaluate run of this session: {ledger['test'].calls:,} calls" in captions
    table = next(df.value for df in at.dataframe if "McNemar p" in df.value.columns)
    assert table["cost"].sum() == pytest.approx(reveal["spend"]["cost_usd"], abs=1e-5)

    # the sidebar (on every page), after the Evaluate job
    for page in ("evaluate", "optimize", "history"):
        goto(at, page)
        side = " ".join(m.value for m in at.sidebar.markdown)
        m = re.search(r"\*\*([\d,]+)\*\* calls · \*\*([\d,]+)\*\* tokens\s+\*\*(\$[\d.,]+)\*\* spent", side)
        assert m, side
        assert int(m[1].replace(",", "")) == total.calls
        assert int(m[2].replace(",", "")) == total.input_tokens + total.output_tokens
        assert m[3] == _money(total.cost_usd)

    # History: totals and one row per part of the ledger
    metrics = {x.label: x.value for x in at.metric}
    assert metrics["Calls (cumulative)"] == f"{total.calls:,}"
    assert metrics["Tokens (cumulative)"] == f"{total.input_tokens + total.output_tokens:,}"
    assert metrics["Cost (cumulative)"] == _money(total.cost_usd)
    spend = next(df.value for df in at.dataframe if "cumulative_calls" in df.value.columns)
    assert spend["calls"].tolist() == [p.calls for p in ledger.values()]
    assert spend["calls"].iloc[0] == 12  # the baseline, not 0
    assert int(spend["cumulative_calls"].iloc[-1]) == total.calls

    # the Markdown report (the History download) and the `pgs` --json summary
    report = bundle.markdown_report(s)
    assert f"- Spend: {total.calls} calls" in report
    assert f"baseline {ledger['baseline'].calls} calls" in report and f"test {ledger['test'].calls} calls" in report
    for st in s.steps:
        assert f"- Spend: {st.spend.calls} calls ({st.spend.cached} from the cache)" in report
    js = summary(s, "done")
    assert (js["calls"], js["cost_usd"]) == (total.calls, round(total.cost_usd, 6))
