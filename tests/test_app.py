"""App tests with streamlit.testing.v1.AppTest: every page, the human-in-the-loop walk, escaping, jobs.

The scripted fake model (`fake:scripted`, registered in this process by conftest) stands in for
the LLMs. Jobs run inline (PGS_INLINE_JOBS=1) because AppTest runs scripts synchronously; one test
exercises the default threaded path by polling.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import llm
from core.llm import register_provider
from core.session import Session, SessionConfig, list_sessions
from tests.fake_model import FakeModel

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGES = ["overview", "setup", "optimize", "history", "evaluate", "studies", "settings"]
XSS = "<script>alert(1)</script> **bold**"


@pytest.fixture
def env(app_test_env):
    return app_test_env


def new_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    return at


def check(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def goto(at: AppTest, page: str) -> AppTest:
    return check(at.switch_page(f"pages/{page}.py").run())


def click(at: AppTest, key: str) -> AppTest:
    return check(at.button(key=key).click().run())


def texts(at: AppTest) -> list[str]:
    """Every literal text the page shows through st.text / st.code."""
    return [e.value for e in at.text] + [e.value for e in at.code]


def markdowns(at: AppTest) -> list[str]:
    return [e.value for e in at.markdown] + [e.value for e in at.caption] + [e.value for e in at.info] + \
        [e.value for e in at.warning] + [e.value for e in at.error] + [e.value for e in at.success]


def plotly_spec(at: AppTest, index: int = 0) -> dict:
    charts = at.get("plotly_chart")
    assert charts, "no plotly chart on the page"
    return json.loads(charts[index].proto.spec)


def create_session(at: AppTest, *, val: int = 20, method: str = "textgrad", preset: str = "quick") -> str:
    goto(at, "setup")
    at.text_input(key="forward_spec").set_value("fake:scripted")
    at.text_input(key="backward_spec").set_value("fake:scripted")
    at.number_input(key="val_size_pubmedqa").set_value(val)
    at.radio(key="method").set_value(method)
    check(at.run())
    at.selectbox(key=f"preset_{method}").set_value(preset)
    check(at.run())
    assert [m.value for m in at.metric if m.label == "Baseline calls"] == [str(val)]
    click(at, "create_session")
    sid = at.session_state["sid"]
    assert sid
    return sid


def open_session(env: Path, sid: str) -> Session:
    return Session.open(sid, root=env / "sessions", readonly=True)


# ---------------------------------------------------------------------------------------------


def test_every_page_renders_with_no_session_and_no_provider(env, monkeypatch):
    monkeypatch.setattr(llm, "_registry", {})  # not even the fake: no provider at all
    at = check(new_app())
    assert any("No session yet" in m.value for m in at.subheader)
    for page in PAGES:
        goto(at, page)
        assert len(at.sidebar) > 0  # every page runs inside app.py's frame
    goto(at, "setup")
    assert any("No model provider is configured" in w.value for w in at.warning)
    assert any("PubMedQA" in s.value for s in at.success)  # built-in tasks can be browsed
    goto(at, "optimize")
    assert any("create one in Setup" in i.value for i in at.info)
    goto(at, "history")
    goto(at, "evaluate")
    assert any("No session yet" in i.value for i in at.info)


def test_walk_accept_edit_reject_history_evaluate(env):
    at = new_app()
    sid = create_session(at)
    goto(at, "optimize")
    assert [m.value for m in at.metric if m.label == "Seed baseline"]

    # step 1: a candidate accepted (by the gate, or by the person's override)
    click(at, "run_step")
    click(at, "continue_step")  # manual steps pause after the answers
    accept = [b for b in at.button if (b.key or "").startswith("accept_s1_")]
    assert accept, "no candidate to accept"
    accept[0].click().run()
    check(at)
    assert any("Gate verdict" in x.value for x in list(at.success) + list(at.warning))
    verdict_accepts = any(b.key == "confirm" and b.label == "Confirm: accept" for b in at.button)
    click(at, "confirm" if verdict_accepts else "override")
    assert open_session(env, sid).steps[-1].outcome == "accepted"

    # step 2: a hand edit, accepted
    click(at, "run_step")
    click(at, "continue_step")
    at.text_area(key="edit_text").set_value("Weigh the evidence in the context; the evidence decides. Evidence first.")
    click(at, "accept_edit")
    g = open_session(env, sid).steps[-1].gate
    assert g is not None
    click(at, "confirm" if g.passed else "override")

    # step 3: everything rejected
    click(at, "run_step")
    click(at, "continue_step")
    click(at, "reject_all")
    s = open_session(env, sid)
    assert [x.outcome for x in s.steps] == ["accepted", "accepted", "rejected"]
    assert [x.decision["action"] for x in s.steps] == ["accept", "edit", "reject"]
    assert len(s.versions) == 3 and s.versions[2].origin == "edit"
    assert "Spend" in [m.value.strip("# ") for m in at.sidebar.markdown]

    # History: the chart carries every validated accuracy and the seed baseline
    goto(at, "history")
    spec = plotly_spec(at)
    ys = [y for tr in spec["data"] for y in (tr.get("y") or [])]
    for st in s.steps[:2]:
        assert any(abs(y - st.gate.new_accuracy) < 1e-9 for y in ys)
    base = next(tr for tr in spec["data"] if tr["name"] == "seed baseline")
    assert base["y"][0] == pytest.approx(s.versions[0].accuracy)
    assert {tr["name"] for tr in spec["data"]} >= {"seed baseline", "accepted"}
    assert any("✓" in str(v) or "✗" in str(v) for df in at.dataframe for v in df.value.to_numpy().ravel())
    assert len(at.get("plotly_chart")) == 2  # the lineage Sankey of the selected step

    # Evaluate: versions and a baseline on test, head to head, CSV
    goto(at, "evaluate")
    at.multiselect(key="eval_baselines").set_value(["cot"])
    at.number_input(key="eval_limit").set_value(25)
    check(at.run())
    click(at, "run_eval")  # asks first: the test split is sealed
    assert any("test split is sealed" in w.value for w in at.warning)
    assert not any(df for df in at.dataframe if "McNemar p" in df.value.columns)
    click(at, "reveal_test")
    table = next(df.value for df in at.dataframe if "McNemar p" in df.value.columns)
    assert len(table) == 3 and table["n"].tolist() == [25, 25, 25]
    assert table["McNemar p"].isna().sum() == 1  # the reference itself
    assert len(at.get("download_button")) == 2
    assert plotly_spec(at)["data"][0]["type"] == "bar"


def test_question_with_script_and_markdown_is_shown_literally(env):
    rows = ["question,label"] + [f'"{XSS} case {i}",{"yes" if i % 2 else "no"}' for i in range(40)]
    at = new_app()
    goto(at, "setup")
    at.radio(key="task_source").set_value("Upload CSV/JSONL")
    check(at.run())
    at.file_uploader(key="upload").set_value(("evil.csv", "\n".join(rows).encode(), "text/csv"))
    check(at.run())
    at.number_input(key="custom_val").set_value(10)
    at.number_input(key="custom_test").set_value(5)
    at.text_input(key="forward_spec").set_value("fake:scripted")
    at.text_input(key="backward_spec").set_value("fake:scripted")
    at.selectbox(key="preset_textgrad").set_value("quick")
    check(at.run())
    assert not at.error, [e.value for e in at.error]
    click(at, "create_session")
    goto(at, "optimize")
    click(at, "run_step")
    click(at, "continue_step")
    shown = " ".join(str(v) for df in at.dataframe for v in df.value.to_numpy().ravel())
    assert XSS in shown  # literally, in the minibatch and failure tables
    for md in markdowns(at) + [e.value for e in at.sidebar.markdown]:
        assert "<script>" not in md and "**bold**" not in md, md
    goto(at, "history")
    for md in markdowns(at):
        assert "<script>" not in md, md


def test_threaded_job_runs_in_background_and_cancels(env, monkeypatch):
    monkeypatch.delenv("PGS_INLINE_JOBS")
    register_provider("slowfake", lambda spec: FakeModel(spec=spec, delay_s=0.25))
    cfg = SessionConfig(task={"name": "pubmedqa", "val_size": 96}, forward="slowfake:a", backward="slowfake:b",
                        preset="quick")
    s = Session.create(cfg, root=env / "sessions")
    s.close()
    at = new_app()
    at.session_state["sid"] = s.id
    goto(at, "optimize")
    click(at, "run_baseline")
    assert at.button(key="cancel_optimize")  # the job panel, while the worker runs
    click(at, "cancel_optimize")
    for _ in range(100):
        time.sleep(0.05)
        check(at.run())
        if any("cancelled" in w.value for w in at.warning):
            break
    assert any("cancelled" in w.value for w in at.warning)
    assert at.button(key="run_baseline")  # nothing recorded: the baseline can start again
    click(at, "run_baseline")
    for _ in range(200):
        if any(b.key == "run_step" for b in at.button):
            break
        time.sleep(0.05)
        check(at.run())
    assert any(b.key == "run_step" for b in at.button)
    assert Session.open(s.id, root=env / "sessions", readonly=True).versions


def test_typed_key_stays_in_memory(env):
    secret = "sk-test-0123456789abcdefghij"
    at = new_app()
    goto(at, "settings")
    at.text_input(key="key_openai").set_value(secret)
    check(at.run())
    assert at.session_state["api_keys"]["openai"] == secret
    assert any("entered in Settings" in m.value for m in at.sidebar.markdown)
    everything = " ".join(markdowns(at) + texts(at) + [t.value for t in at.text_input])
    assert secret not in everything
    sid = create_session(at)
    for path in env.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert list_sessions(env / "sessions")[0]["id"] == sid


def test_bundle_import_is_browsable_in_replay_mode(env):
    from core import bundle
    from core.cache import ResponseCache
    from core.runner import Runner
    from core.session import Models

    cfg = SessionConfig(task={"name": "pubmedqa", "val_size": 15}, forward="fake:scripted", backward="fake:scripted",
                        preset="quick")
    cache = ResponseCache(env / "other-cache")
    s = Session.create(cfg, root=env / "elsewhere", models=Models(FakeModel(), FakeModel(), Runner(cache=cache)))
    s.run_auto(2)
    data = bundle.bundle_bytes(s, cache)
    s.close()

    at = new_app()
    goto(at, "setup")
    at.file_uploader(key="bundle_upload").set_value(("session.bundle.json", data, "application/json"))
    check(at.run())
    click(at, "replay_bundle")
    assert any("matches the recording" in x.value for x in at.success)
    click(at, "import_bundle")
    goto(at, "history")
    assert any("Replay mode" in i.value for i in at.info)
    assert plotly_spec(at)["data"]
    goto(at, "optimize")
    assert any("Replay mode" in i.value for i in at.info)
    goto(at, "setup")
    at.file_uploader(key="bundle_upload").set_value(("bad.json", b'{"format": "nope"}', "application/json"))
    check(at.run())
    click(at, "import_bundle")
    assert any("Cannot import this bundle" in e.value for e in at.error)


def test_corrupt_session_opens_read_only_with_a_warning(env):
    from core.cache import ResponseCache
    from core.runner import Runner
    from core.session import Models

    cfg = SessionConfig(task={"name": "pubmedqa", "val_size": 10}, forward="fake:scripted", backward="fake:scripted",
                        preset="quick")
    s = Session.create(cfg, root=env / "sessions",
                       models=Models(FakeModel(), FakeModel(), Runner(cache=ResponseCache(env / "cache"))))
    s.run_auto(1)
    s.close()
    lines = s.events_path.read_text().splitlines()
    s.events_path.write_text("\n".join(lines[:3] + ["{not json"] + lines[3:]) + "\n")
    at = new_app()
    at.session_state["sid"] = s.id
    for page in ("overview", "optimize", "history"):
        goto(at, page)
        assert any("Read-only" in w.value and "corrupt" in w.value for w in at.warning), page
    assert not any(b.key == "run_step" and not b.disabled for b in at.button)


class _FlakyModel(FakeModel):
    """The scripted fake whose update calls fail while `failing` is set (as a timed-out call does)."""

    failing = {"textgrad.update": False}
    sent: dict = {}

    async def acomplete(self, req):
        _FlakyModel.sent[req.tag] = _FlakyModel.sent.get(req.tag, 0) + 1
        if self.failing.get(req.tag):
            return llm.Completion(error="APITimeoutError: Request timed out.", model=str(self.spec))
        return await super().acomplete(req)


def test_retry_failed_calls_button_sends_only_the_failed_ones(env):
    register_provider("fake", lambda spec: _FlakyModel(spec=spec), price=(1.0, 2.0))
    try:
        at = new_app()
        sid = create_session(at)
        goto(at, "optimize")
        _FlakyModel.failing["textgrad.update"] = True
        click(at, "run_step")
        click(at, "continue_step")  # manual steps pause after the answers
        warn = [w.value for w in at.warning if "failed" in w.value]
        from ui.render import md_escape  # the texts are shown escaped (literally)
        assert warn and (f"{md_escape('update (the improved prompt)')}: "
                         f"{md_escape('APITimeoutError: Request timed out.')}") in warn[0]
        n_failed = len(open_session(env, sid).step.failed_calls)
        assert n_failed >= 1 and not open_session(env, sid).step.proposal.candidates
        _FlakyModel.failing["textgrad.update"] = False
        _FlakyModel.sent.clear()
        click(at, "retry_failed")
        assert _FlakyModel.sent == {"textgrad.update": n_failed}  # the forward answers, losses, gradient: cached
        s = open_session(env, sid)
        assert [e["type"] for e in s.events].count("proposal_retried") == 1
        assert s.step.proposal.candidates and not s.step.failed_calls
        assert not any(b.key == "retry_failed" for b in at.button)
        assert any((b.key or "").startswith("accept_s1_") for b in at.button)
    finally:
        _FlakyModel.failing["textgrad.update"] = False
        from tests.fake_model import register
        register()


def test_history_reverts_to_an_earlier_version(env):
    at = new_app()
    sid = create_session(at)
    goto(at, "optimize")
    click(at, "run_step")
    click(at, "continue_step")  # manual steps pause after the answers
    at.text_area(key="edit_text").set_value("Weigh the evidence in the context; the evidence decides. Evidence first.")
    click(at, "accept_edit")
    g = open_session(env, sid).steps[-1].gate
    click(at, "confirm" if g.passed else "override")
    assert len(open_session(env, sid).versions) == 2
    goto(at, "history")
    at.selectbox(key="revert_to").set_value(0)
    click(at, "revert")
    s = open_session(env, sid)
    assert [e["type"] for e in s.events][-1] == "reverted"
    assert (len(s.versions), s.current.origin, s.current.prompt) == (3, "revert", s.versions[0].prompt)
    assert any("v2 is v0\\'s prompt again" in m.value for m in at.success)  # shown escaped (literally)
    assert "v2 · step 1 · revert of v0" in at.selectbox(key="diff_b").options[2]
    goto(at, "optimize")
    assert any(m.label == "Current (v2)" for m in at.metric)
    assert any("v0's prompt, reverted" in e.label for e in at.expander)


def test_guided_step_feedback_and_person_gradient_on_optimize(env):
    at = new_app()
    sid = create_session(at, val=10)
    goto(at, "optimize")
    click(at, "run_step")  # pauses after the answers: the app's default for a manual step
    s = open_session(env, sid)
    assert s.state == "answered" and s.events[-1]["type"] == "paused" and s.spend.calls == 10 + 3
    assert at.button(key="continue_step").label == "Continue: write gradients"
    qid = next(r.id for r in s.step.forward[0].rows if not r.correct)  # the table shows the failures first
    at.selectbox(key="fb_q_s1").set_value(qid)
    at.text_input(key="fb_text_s1").set_value("The answer ignored the stated p-value.")
    click(at, "fb_save_s1")
    assert open_session(env, sid).step.feedback == {qid: "The answer ignored the stated p-value."}
    assert any("person" in m and qid in m for m in markdowns(at))
    feedback_col = [df.value for df in at.dataframe if "your feedback (person)" in df.value.columns]
    assert feedback_col and "The answer ignored the stated p-value." in feedback_col[0]["your feedback (person)"].tolist()

    click(at, "continue_step")
    s = open_session(env, sid)
    assert s.state == "proposed" and s.step.proposal.gradients[0].feedback[qid] == "The answer ignored the stated p-value."
    model_cands = [c.id for c in s.step.proposal.candidates]
    at.selectbox(key="pg_src_p1").set_value(s.step.proposal.gradients[0].id)
    check(at.run())
    assert at.text_area(key="pg_text_p1").value == s.step.proposal.gradients[0].text  # editing the model's
    at.text_area(key="pg_text_p1").set_value("The prompt never asks for the p-value.")
    click(at, "pg_apply_p1")
    s = open_session(env, sid)
    new = [c for c in s.step.proposal.candidates if c.id not in model_cands]
    assert new and {c.origin for c in new} == {"person"} and "p-value" in new[0].prompt
    assert s.step.person_gradients == {"s1.h1.g1": s.step.proposal.gradients[0].id}
    keys = [b.key for b in at.button]
    assert f"accept_s1_{new[0].id}" in keys and all(f"accept_s1_{c}" in keys for c in model_cands)
    assert any(m.value == "Written by you, editing gradient 1" for m in at.caption)
    click(at, f"accept_s1_{new[0].id}")
    assert open_session(env, sid).step.decision["candidate"] == new[0].id
