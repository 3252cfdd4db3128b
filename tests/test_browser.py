"""Browser tests: `streamlit run app.py` driven by Playwright in Debian's chromium.

The models are a local stub server that speaks the OpenAI Chat Completions protocol and answers like
the scripted fake model, reached through the real `openai` SDK (`openai-compatible:stub-model` with
the stub's base URL); one test runs a real step against the real local model. Screenshots go to the
git-ignored tests/screenshots/ (with PGS_DOCS_SCREENSHOTS=1 the README's go to docs/screenshots/).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.browser_util import (CHROMIUM, StreamlitServer, app_env, body_text, choose_option, choose_radio,
                                click_key, docs_shot, fill_key, key, launch, nav, shot, wait_for, wait_idle)
from tests.conftest import IN_CI, LOCAL_MODEL
from tests.fake_model import FakeModel, learn_task, stub_responder
from tests.stub_server import StubServer

pytestmark = pytest.mark.browser

STUB_SPEC = "openai-compatible:stub-model"
XSS = "<script>window.__xss=1</script> **bold**"
PROGRESS = '[data-testid="stProgress"]'
CANDIDATE_ACCEPT = '[class*="st-key-accept_s{step}_"] button'


def _need_browser() -> None:
    """Never skipped in CI; elsewhere skipped only when chromium or playwright is missing."""
    problems = []
    if not Path(CHROMIUM).exists():
        problems.append(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("playwright is not installed (pip install -e '.[test]')")
    if problems:
        if IN_CI:
            pytest.fail("browser tests must run in CI: " + "; ".join(problems))
        pytest.skip("; ".join(problems))


@pytest.fixture(scope="module")
def browser():
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


@pytest.fixture(scope="module")
def stub():
    with StubServer(responder=stub_responder(FakeModel())) as s:
        yield s


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app")
    server = StreamlitServer(app_env(tmp), log=tmp / "streamlit.log").start()
    server.tmp = tmp
    yield server
    server.stop()


def new_page(browser):
    """A fresh browser context (its own cookies: a new Streamlit session) and page, 1400×900, recording
    uncaught page errors in `page.errors`."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.errors = errors
    return ctx, pg


@pytest.fixture
def page(browser):
    ctx, pg = new_page(browser)
    yield pg
    ctx.close()


def open_page(page, url: str) -> None:
    page.goto(url)
    # the app's own sidebar (Streamlit first shows its automatic pages/ list, before app.py's navigation runs)
    wait_for(page, '[data-testid="stSidebarUserContent"] h4', 90)
    wait_for(page, '[data-testid="stMain"] h1', 30)
    wait_idle(page)


def set_models(page, spec: str, base_url: str) -> None:
    for which in ("forward", "backward"):
        fill_key(page, f"{which}_spec", spec)
        fill_key(page, f"{which}_url", base_url)


def no_exception(page) -> None:
    """No Python exception box on the page and no uncaught error in the browser."""
    assert page.locator('[data-testid="stException"]').count() == 0, body_text(page)[:3000]
    assert not page.errors, page.errors


def count_testid(page, testid: str) -> int:
    return page.locator(f'[data-testid="{testid}"]').count()


def events(root: Path, sid: str) -> list[dict]:
    import json

    return [json.loads(x) for x in (root / sid / "events.jsonl").read_text().splitlines() if x.strip()]


def sid_of(page) -> str:
    m = re.search(r"[?&]session=([A-Za-z0-9_\-]+)", page.url)
    assert m, page.url
    return m.group(1)


def run_step(page, timeout: float = 60) -> None:
    """Run step: the page pauses after the minibatch answers (its default); then write the gradients."""
    click_key(page, "run_step")
    wait_for(page, ".st-key-continue_step button", timeout)
    click_key(page, "continue_step")


def finish_gate(page) -> str:
    """Confirm the gate's verdict; returns it ('accept' or 'reject')."""
    btn = wait_for(page, ".st-key-confirm button", 90)
    verdict = "accept" if "accept" in btn.inner_text() else "reject"
    click_key(page, "confirm")
    wait_for(page, ".st-key-run_step button", 30)
    return verdict


def more_steps_for_the_readme(page) -> None:
    """A hand edit (accepted) and an auto-run, so the README's History chart has something to show."""
    run_step(page)
    wait_for(page, CANDIDATE_ACCEPT.format(step=2), 60)
    fill_key(page, "edit_text", "You are a careful clinician. Weigh the evidence in the abstract: find the evidence "
                                "for and against, then answer from the evidence.")
    click_key(page, "accept_edit")
    wait_for(page, ".st-key-confirm button", 90)
    click_key(page, "confirm" if "accept" in page.locator(".st-key-confirm button").first.inner_text() else "override")
    wait_for(page, ".st-key-auto_run button", 30)
    fill_key(page, "auto_n", "3")
    click_key(page, "auto_run")
    page.locator(".st-key-cancel_optimize").first.wait_for(state="detached", timeout=120_000)
    wait_idle(page)


# ---------------------------------------------------------------------------------------------


def test_setup_step_gate_history(app, stub, page):
    """Setup → create → baseline (leave the page while it runs, come back) → Run step → gradients and
    candidates with diffs → accept one → validation → the gate → confirm → History's chart."""
    open_page(page, app.url + "/setup")
    no_exception(page)
    shot(page, "01_setup_empty")
    set_models(page, STUB_SPEC, stub.base_url)
    fill_key(page, "val_size_pubmedqa", "12")
    choose_option(page, "preset_textgrad", "quick")
    metrics = page.locator('[data-testid="stMetric"]')
    assert metrics.filter(has_text="Baseline calls").filter(has_text="12").count() == 1
    assert metrics.filter(has_text="One step: calls").count() == 1
    shot(page, "02_setup_filled")
    docs_shot(page, "setup", scroll_to="h3:has-text('Models')", height=860)

    # the baseline runs in a worker thread; hold the stub so it lasts while we look elsewhere
    stub.delay_s = 5.0
    before = stub.completion_count
    click_key(page, "create_session")
    try:
        wait_for(page, PROGRESS, 30)
        assert key(page, "cancel_optimize").count() >= 1
        sid = sid_of(page)
        nav(page, "History")  # leave the page while the job runs…
        wait_for(page, "text=is running; its progress is in Optimize", 30)  # the page may still be drawing
        assert page.locator('[data-testid="stSidebar"]').get_by_text("running").count() >= 1
        nav(page, "Overview")
        nav(page, "Optimize")  # …and come back: still running, with its progress and cancel button
        wait_for(page, PROGRESS, 10)
        assert key(page, "cancel_optimize").count() >= 1
        assert "Baseline" in page.locator(PROGRESS).first.inner_text()
        shot(page, "03_baseline_running")
    finally:
        stub.delay_s = 0.0
    wait_for(page, ".st-key-run_step button", 60)
    assert stub.completion_count - before == 12  # the seed prompt on the 12 validation questions, once
    no_exception(page)
    assert metrics.filter(has_text="Seed baseline").count() == 1
    shot(page, "04_ready")

    # one step: minibatch, gradients and candidates, each candidate with a word diff
    run_step(page)
    accept = wait_for(page, CANDIDATE_ACCEPT.format(step=1), 60)
    no_exception(page)
    text = body_text(page)
    assert "Gradients (1)" in text and "Candidates (" in text
    assert "weigh the evidence" in text.lower()  # the gradient the stub wrote
    wait_for(page, "ins", 10)  # the diff marks the words the candidate added
    assert count_testid(page, "stDataFrame") >= 1  # the minibatch's failures
    shot(page, "05_step_proposed")
    docs_shot(page, "optimize", scroll_to="h4:has-text('Gradients')", height=860)
    page.set_viewport_size({"width": 700, "height": 900})
    wait_idle(page)
    shot(page, "05_step_proposed_narrow")
    page.set_viewport_size({"width": 1400, "height": 900})
    wait_idle(page)

    # accept the first candidate: validation starts at once, then the gate
    accept.click()
    wait_for(page, ".st-key-confirm button", 90)
    no_exception(page)
    gate = page.locator('[data-testid="stMetric"]')
    for label in ("Current prompt", "Chosen prompt", "McNemar p", "Fixed / broke"):
        assert gate.filter(has_text=label).count() >= 1, label
    assert "Gate verdict" in body_text(page)
    shot(page, "06_gate")
    verdict = finish_gate(page)
    no_exception(page)
    ev = events(app.tmp / "sessions", sid)
    gate_ev = [e for e in ev if e["type"] == "gate"]
    assert len(gate_ev) == 1 and gate_ev[0]["accepted"] == (verdict == "accept")
    if os.environ.get("PGS_DOCS_SCREENSHOTS"):
        more_steps_for_the_readme(page)

    # History: the chart, the spend metrics and table
    nav(page, "History")
    wait_for(page, '[data-testid="stPlotlyChart"]', 30)
    no_exception(page)
    assert count_testid(page, "stPlotlyChart") >= 1
    assert page.locator('[data-testid="stMetric"]').filter(has_text="Calls (cumulative)").count() == 1
    assert count_testid(page, "stDataFrame") >= 1
    assert page.locator(".js-plotly-plot .scatterlayer .trace").count() >= 2  # baseline line + the step
    shot(page, "07_history")
    docs_shot(page, "history", height=800)
    page.set_viewport_size({"width": 700, "height": 900})
    wait_idle(page)
    shot(page, "07_history_narrow")
    page.set_viewport_size({"width": 1400, "height": 900})
    wait_idle(page)

    # the step's record and lineage
    page.get_by_role("tab", name="Steps and lineage").click()
    wait_idle(page)
    page.locator('[data-testid="stPlotlyChart"]').nth(1).wait_for(timeout=20_000)
    shot(page, "08_history_lineage")
    nav(page, "Overview")
    no_exception(page)
    shot(page, "09_overview")

    # Evaluate: the versions on the test split, head to head
    nav(page, "Evaluate")
    fill_key(page, "eval_limit", "10")
    click_key(page, "run_eval")  # the test split is sealed: a warning first, then the recorded reveal
    click_key(page, "reveal_test")
    wait_for(page, '[data-testid="stPlotlyChart"]', 60)
    no_exception(page)
    page.locator('[data-testid="stDownloadButton"]').nth(1).wait_for(timeout=20_000)  # summary and per-question CSV
    assert count_testid(page, "stDataFrame") == 1
    shot(page, "09_evaluate")


def test_script_in_a_question_stays_text(app, stub, page, tmp_path):
    """A custom CSV whose questions hold <script> and **Markdown**: shown literally, never run or rendered."""
    from core.tasks import load_custom

    rows = ["question,label"] + [f'"{XSS} case {i}",{"yes" if i % 2 else "no"}' for i in range(40)]
    data = ("\n".join(rows) + "\n").encode()
    learn_task(load_custom(data, "evil.csv", input_cols=["question"], label_col="label", val_size=10, test_size=5))
    csv = tmp_path / "evil.csv"
    csv.write_bytes(data)

    open_page(page, app.url + "/setup")
    choose_radio(page, "task_source", "Upload CSV/JSONL")
    key(page, "upload").locator('input[type="file"]').set_input_files(str(csv))
    wait_for(page, ".st-key-custom_val input", 30)
    wait_idle(page)
    fill_key(page, "custom_val", "10")
    fill_key(page, "custom_test", "5")
    set_models(page, STUB_SPEC, stub.base_url)
    choose_option(page, "preset_textgrad", "quick")
    no_exception(page)
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0, body_text(page)[:2000]
    click_key(page, "create_session")
    wait_for(page, ".st-key-run_step button", 60)
    run_step(page)
    wait_for(page, CANDIDATE_ACCEPT.format(step=1), 60)

    # a hand edit with Markdown and a script after a blank line: the decision's diff must stay text too
    fill_key(page, "edit_text", "Weigh the evidence.\n\n" + XSS + "\n\n# heading")
    click_key(page, "accept_edit")
    wait_for(page, ".st-key-confirm button", 90)
    no_exception(page)
    assert page.evaluate("() => typeof window.__xss") == "undefined"
    shown = page.evaluate("() => document.body.textContent")
    assert XSS in shown  # literally: the questions in the exact calls, the prompt in the diff
    assert page.locator("script", has_text="__xss").count() == 0
    assert page.locator("strong", has_text=re.compile(r"^bold$")).count() == 0
    assert page.locator("h1", has_text=re.compile(r"^heading$")).count() == 0
    page.locator('[data-testid="stExpander"] summary').filter(has_text="fixed (wrong before").first.click()
    wait_idle(page)
    assert page.locator('[data-testid="stExpander"]').filter(has_text="fixed (wrong before").locator(
        '[data-testid="stDataFrame"]').count() == 1
    shot(page, "10_xss_gate")
    finish_gate(page)
    nav(page, "History")
    wait_for(page, '[data-testid="stPlotlyChart"]', 30)
    page.get_by_role("tab", name="Steps and lineage").click()
    wait_idle(page)
    assert page.evaluate("() => typeof window.__xss") == "undefined"
    assert page.locator("strong", has_text=re.compile(r"^bold$")).count() == 0
    no_exception(page)
    shot(page, "11_xss_history")


def test_sigkill_during_validation_then_resume(browser, stub, tmp_path):
    """kill -9 the Streamlit server while validation is scoring, restart it, reopen the session and
    finish the step: the accepted step before stays, the validation answers that finished come from
    the cache (the stub sees fewer new requests than the validation size)."""
    from core.cache import ResponseCache
    from core.runner import Runner
    from core.session import Models, Session, SessionConfig

    val = 24
    root, cache_dir = tmp_path / "sessions", tmp_path / "cache"
    cfg = SessionConfig(task={"name": "pubmedqa", "val_size": val}, method="textgrad", preset="quick",
                        forward=STUB_SPEC, backward=STUB_SPEC, forward_base_url=stub.base_url,
                        backward_base_url=stub.base_url, policy="strict",
                        validate_ahead=False)  # the kill must land in the validation after the decision
    cache = ResponseCache(cache_dir)
    made_before = stub.completion_count
    s = Session.create(cfg, root=root, models=Models.from_config(cfg, Runner(cache=cache)))
    s.run_baseline()
    s.start_step()  # step 1 through the same real-SDK path, accepted (by override if the gate says no)
    s.decide("accept", candidate=s.step.proposal.candidates[0].id)
    s.validate()
    s.confirm(accept=True)
    sid, accepted_prompt = s.id, s.current.prompt
    s.close()

    env = app_env(tmp_path)
    server = StreamlitServer(env, log=tmp_path / "streamlit-1.log").start()
    ctx, page = new_page(browser)
    try:
        open_page(page, f"{server.url}/optimize?session={sid}")
        run_step(page)
        accept = wait_for(page, CANDIDATE_ACCEPT.format(step=2), 60)
        n_cached = len(cache)
        stub.delay_s = 1.0  # validation: 24 new answers, 8 at a time, 1 s each
        accept.click()
        deadline = time.time() + 60
        while time.time() < deadline and len(cache) < n_cached + 8:
            time.sleep(0.02)
        server.kill9()
        finished = len(cache) - n_cached
        assert 8 <= finished < val, finished
        kinds = [e["type"] for e in events(root, sid) if e["type"] != "spend"]  # spend is logged as calls land
        assert kinds[-1] == "decision"  # the choice survived the crash
    finally:
        stub.delay_s = 0.0
        server.stop()

    server = StreamlitServer(env, log=tmp_path / "streamlit-2.log").start()
    try:
        open_page(page, f"{server.url}/optimize?session={sid}")
        wait_for(page, ".st-key-validate button", 120)  # decided, not validated: validate again
        sent = stub.completion_count
        click_key(page, "validate")
        wait_for(page, ".st-key-confirm button", 90)
        resent = stub.completion_count - sent
        assert resent == val - finished < val  # only the unfinished calls went out again
        if "accept" in page.locator(".st-key-confirm button").first.inner_text():
            click_key(page, "confirm")
        else:
            click_key(page, "override")
        wait_for(page, ".st-key-run_step button", 120)  # generous: CI machines are shared and noisy
        shot(page, "12_after_kill_resume")
    finally:
        ctx.close()
        server.stop()
    s = Session.open(sid, root=root, readonly=True)
    made = stub.completion_count - made_before
    # never counted twice; spend is logged as calls land (at most every second), so the kill loses at most
    # the last second's answers and the calls in flight: 8 at a time here, so at most 16
    assert made - 16 <= s.spend.calls <= made, (made, s.spend.calls)
    assert [x.outcome for x in s.steps] == ["accepted", "accepted"]
    assert s.versions[1].prompt == accepted_prompt and len(s.versions) == 3
    assert sum(1 for e in s.events if e["type"] == "validation") == 2  # no validation recorded twice


@pytest.mark.localllm
def test_real_step_against_the_local_model(browser, local_llm_url, tmp_path):
    """One real step in the browser against ../shared/tools/local-llm: proposal shown (candidates, or a
    clear note when the tiny model ignored the tags), then decided and finished."""
    server = StreamlitServer(app_env(tmp_path), log=tmp_path / "streamlit.log").start()
    ctx, page = new_page(browser)
    slow = 20 * 60  # the real model is slow (seconds per call) and shared
    try:
        open_page(page, server.url + "/setup")
        choose_option(page, "task_name", "LIAR")
        fill_key(page, "val_size_liar", "5")
        set_models(page, LOCAL_MODEL, local_llm_url)
        fill_key(page, "forward_max_tokens", "64")
        choose_option(page, "preset_textgrad", "quick")
        fill_key(page, "p_textgrad_quick_batch_size", "2")
        fill_key(page, "p_textgrad_quick_max_tokens", "200")
        metrics = page.locator('[data-testid="stMetric"]')
        assert metrics.filter(has_text="Baseline calls").filter(has_text="5").count() == 1
        no_exception(page)
        click_key(page, "create_session")
        wait_for(page, ".st-key-run_step button", slow)
        no_exception(page)
        run_step(page, slow)
        page.locator(".st-key-reject_all button").first.wait_for(state="visible", timeout=slow * 1000)
        no_exception(page)
        text = body_text(page)
        assert "Gradients (" in text and "Candidates (" in text
        n_cand = page.locator(CANDIDATE_ACCEPT.format(step=1)).count()
        if n_cand == 0:  # the tiny model ignored the tags: the page says so plainly
            assert page.locator('[data-testid="stAlertContentInfo"]').count() >= 1 or "No candidates" in text
        shot(page, "13_real_model_proposal")
        if n_cand:
            page.locator(CANDIDATE_ACCEPT.format(step=1)).first.click()
            btn = page.locator(".st-key-confirm button").first
            btn.wait_for(state="visible", timeout=slow * 1000)
            wait_idle(page)
            click_key(page, "confirm")
        else:
            click_key(page, "reject_all")
        wait_for(page, ".st-key-run_step button", 60)
        no_exception(page)
        assert "Last step 1:" in body_text(page)
        shot(page, "14_real_model_done")
    finally:
        ctx.close()
        server.stop()


class _DropsFirstSentence(FakeModel):
    """The scripted optimiser, except that the greedy update drops the prompt's first sentence."""

    def reply(self, req):
        out = super().reply(req)
        if req.tag == "textgrad.update" and req.temperature == 0:
            from core.blame import split_sentences

            prompt = re.search(r"<VARIABLE> (.*?) </VARIABLE>", req.messages[-1][1], re.S).group(1)
            out = f"<IMPROVED_VARIABLE>{' '.join(split_sentences(prompt)[1:])} Weigh the evidence.</IMPROVED_VARIABLE>"
        return out


def test_lock_a_sentence_then_blame_in_history(app, page):
    """Lock the seed's first sentence → the greedy candidate that drops it is flagged and offers only
    "Accept 1 anyway" → take the other → History's Blame tab says which step brought in each sentence."""
    seed = "You are a careful clinician. Read the abstract before answering. Answer yes, no or maybe."
    with StubServer(responder=stub_responder(_DropsFirstSentence())) as lock_stub:
        open_page(page, app.url + "/setup")
        set_models(page, STUB_SPEC, lock_stub.base_url)
        fill_key(page, "val_size_pubmedqa", "8")
        choose_option(page, "preset_textgrad", "quick")
        fill_key(page, "seed_prompt", seed)
        click_key(page, "create_session")
        wait_for(page, ".st-key-run_step button", 60)
        sid = sid_of(page)
        page.get_by_text("Lock sentences (0 of 3 locked)").first.click()
        key(page, f"lock_{sid}_v0_1").locator("label").first.click()
        wait_idle(page)
        wait_for(page, "text=Lock sentences (1 of 3 locked)", 20)
        assert [e["numbers"] for e in events(app.tmp / "sessions", sid) if e["type"] == "sentences_locked"] == [[1]]
        run_step(page)
        wait_for(page, CANDIDATE_ACCEPT.format(step=1), 60)
        no_exception(page)
        text = body_text(page)
        assert "changes locked sentence" in text and "Accept 1 anyway" in text and "Accept 2" in text
        shot(page, "10_lock_flagged_candidate")
        page.locator('[class*="st-key-accept_s1_"] button').filter(has_text="Accept 2").first.click()
        wait_idle(page)
        verdict_btn = wait_for(page, ".st-key-confirm button", 90)
        click_key(page, "confirm" if "accept" in verdict_btn.inner_text() else "override")
        wait_for(page, ".st-key-run_step button", 30)
        ev = events(app.tmp / "sessions", sid)
        upd = [e for e in ev if e["type"] == "proposal"][0]["proposal"]["candidates"][1]["call"]["messages"]
        assert "<LOCKED>\n- You are a careful clinician.\n</LOCKED>" in upd[-1][1]
        nav(page, "History")
        page.get_by_role("tab", name="Blame").click()
        wait_idle(page)
        page.get_by_text("Sentence 4 · step 1 · update").first.click()
        wait_idle(page)
        no_exception(page)
        text = body_text(page)
        assert "Sentence 1 · seed prompt" in text and "Weigh the evidence." in text
        assert "Failures it came from" in text
        shot(page, "11_history_blame")


def test_person_feedback_and_gradient_in_a_guided_step(browser, app, stub):
    """A manual step pauses after the answers; the person's feedback on a wrong answer, then the model's gradients,
    then the person's own gradient: its candidates appear beside the model's, marked 'person'."""
    from core.runner import Runner
    from core.session import Models, Session, SessionConfig

    root = app.tmp / "sessions"
    cfg = SessionConfig(task={"name": "pubmedqa", "val_size": 10}, method="textgrad", preset="quick",
                        forward=STUB_SPEC, backward=STUB_SPEC, forward_base_url=stub.base_url,
                        backward_base_url=stub.base_url, policy="strict")
    from concurrent.futures import ThreadPoolExecutor

    def baseline() -> str:  # off playwright's event loop
        with Session.create(cfg, root=root, models=Models.from_config(cfg, Runner())) as s:
            s.run_baseline()
            return s.id

    with ThreadPoolExecutor(1) as pool:
        sid = pool.submit(baseline).result()
    ctx, page = new_page(browser)
    try:
        open_page(page, f"{app.url}/optimize?session={sid}")
        click_key(page, "run_step")
        wait_for(page, ".st-key-continue_step button", 60)
        step = Session.open(sid, root=root, readonly=True).step
        assert step.status == "answered" and step.proposal is None
        wrong = next(r for r in step.forward[0].rows if not r.correct)
        choose_option(page, "fb_q_s1", f"{wrong.id} · gold {wrong.gold} · wrong")
        fill_key(page, "fb_text_s1", "The answer ignored the stated p-value.")
        click_key(page, "fb_save_s1")
        page.get_by_text(f"Your feedback on question {wrong.id} is recorded.").first.wait_for(timeout=30_000)
        wait_idle(page)
        no_exception(page)
        assert "The answer ignored the stated p-value." in body_text(page)
        shot(page, "15_guided_step_feedback")

        click_key(page, "continue_step")
        wait_for(page, CANDIDATE_ACCEPT.format(step=1), 60)
        wait_for(page, ".st-key-pg_text_p1 textarea", 30)
        fill_key(page, "pg_text_p1", "The prompt never asks the model to quote the p-value.")
        click_key(page, "pg_apply_p1")
        deadline = time.time() + 60
        while time.time() < deadline and "person_gradient" not in {e["type"] for e in events(root, sid)}:
            time.sleep(0.2)
        page.get_by_text("Written by you").first.wait_for(timeout=60_000)  # the person's gradient card
        wait_idle(page)
        no_exception(page)
        s = Session.open(sid, root=root, readonly=True)
        new = [c for c in s.step.proposal.candidates if c.origin == "person"]
        assert page.locator(".st-key-edit_text textarea").first.input_value() == s.current.prompt  # editor kept
        assert new and page.locator(f'[class*="st-key-accept_s1_{new[0].id.replace(".", "-")}"], '
                                    f'[class*="st-key-accept_s1_{new[0].id}"]').count() >= 1
        assert {c.origin for c in s.step.proposal.candidates} == {"update", "person"}
        assert s.step.proposal.gradients[0].feedback[wrong.id] == "The answer ignored the stated p-value."
        shot(page, "16_person_gradient_candidates")
    finally:
        ctx.close()


def test_studies_page_of_a_three_seed_study_on_the_stub(browser, tmp_path):
    """`pgs study` (the real openai SDK against the stub) finishes 3 seeds x 2 validation sizes; the Studies page
    shows the runs, the per-setting plot with intervals, and opens a run's session in one click."""
    import json
    import subprocess

    from tests.browser_util import streamlit_server
    from tests.conftest import pgs_cmd
    from tests.fake_model import MinibatchFake

    with StubServer(responder=stub_responder(MinibatchFake())) as study_stub:
        env = app_env(tmp_path)
        out = subprocess.run(pgs_cmd() + ["study", "--task", "pubmedqa", "--forward", STUB_SPEC, "--backward", STUB_SPEC,
                                          "--base-url", study_stub.base_url, "--seeds", "3", "--val-sizes", "50,100",
                                          "--presets", "quick", "--steps", "2", "--reveal-test", "--test-limit", "40",
                                          "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    d = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(d["runs"]) == 6 and all(r["status"] == "done" and r["test"] is not None for r in d["runs"])
    with streamlit_server(env, log=tmp_path / "streamlit.log") as server:
        ctx, page = new_page(browser)
        try:
            open_page(page, server.url)
            nav(page, "Studies")
            wait_for(page, '[data-testid="stPlotlyChart"]', 60)
            wait_idle(page)
            no_exception(page)
            text = body_text(page)
            assert d["study"] in text and "Final validation per setting" in text
            assert count_testid(page, "stDataFrame") == 2
            shot(page, "20_studies")
            docs_shot(page, "studies", scroll_to='[data-testid="stMetric"]')
            target = d["runs"][4]["session"]
            click_key(page, f"study_open_{target}")
            wait_for(page, '[data-testid="stMain"] h1:has-text("History")', 60)
            assert sid_of(page) == target
            no_exception(page)
        finally:
            ctx.close()


def test_demo_opens_with_the_network_blocked(browser, tmp_path):
    """The first page's "Open the demo session" with no key in the server's environment and every request that
    is not to this machine aborted: every page renders the recording, the model and date on screen."""
    from urllib.parse import urlparse

    from core.demo import recording

    server = StreamlitServer(app_env(tmp_path), log=tmp_path / "streamlit.log").start()
    ctx, page = new_page(browser)
    blocked: list[str] = []

    def only_this_machine(route):
        if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost"):
            return route.continue_()
        blocked.append(route.request.url)
        return route.abort()

    ctx.route("**/*", only_this_machine)
    try:
        open_page(page, server.url)
        click_key(page, "open_demo")
        wait_for(page, '[data-testid="stMain"] h3', 30)
        no_exception(page)
        rec = recording()
        assert rec.model in body_text(page) and rec.recorded in body_text(page)
        for title, marker in (("Optimize", "The recorded steps"), ("History", "Validation"),
                              ("Evaluate", "The recorded scores"), ("Setup", "Setup"), ("Settings", "Settings"),
                              ("Overview", "Prompt Gradient Studio")):
            nav(page, title)
            wait_for(page, '[data-testid="stMain"] h1', 30)
            wait_idle(page)
            no_exception(page)
            text = body_text(page)
            assert marker in text and rec.model in text, (title, text[:1500])
            assert page.locator(".st-key-confirm_servers, .st-key-run_step").count() == 0
        nav(page, "Optimize")
        key(page, "explain_toggle").locator("label").first.click()
        wait_idle(page)
        assert "A version is a prompt that passed the gate" in body_text(page), body_text(page)[:3000]
        shot(page, "15_demo_optimize_explain", full_page=False)
        docs_shot(page, "demo", scroll_to='h3:has-text("The recorded steps")', width=1400, height=900,
                  sidebar=True)
        nav(page, "History")
        wait_for(page, '[data-testid="stPlotlyChart"]', 30)
        wait_idle(page)
        no_exception(page)
        shot(page, "16_demo_history", full_page=False)
        assert blocked == [], blocked
    finally:
        ctx.close()
        server.stop()
