"""Streamed text to the page: `ClientOptions.on_text` sees growing prefixes of the reply while the backward
model writes it, then the recorded text once; the Optimize page shows it literally.

The real openai and anthropic SDKs against tests/stub_server.py streaming server-sent events slowly.
"""

from __future__ import annotations

import threading
import time

import pytest
from streamlit.testing.v1 import AppTest

from core.llm import ClientOptions, Request, TextSoFar, make_model
from core.progress import LIVE_TEXTS_KEPT, JobProgress
from core.runner import Runner

try:
    from tests.stub_server import StubServer
except ImportError:  # tests/ on sys.path
    from stub_server import StubServer

pytestmark = pytest.mark.timeout(120)

KEY = "sk-test-stream-text-0000"
PROVIDERS = ("openai", "anthropic")
GRADIENT = ("The prompt never asks the model to check the stated p-value before answering, so answers "
            "about significance follow the abstract's tone instead of its numbers")


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch):
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield
    assert not [t for t in threading.enumerate() if t.name == "stub-llm-server"]


def model_for(provider: str, s: StubServer, **opts):
    o = ClientOptions(**{"max_retries": 0, **opts})
    if provider == "openai":
        return make_model("openai:gpt-4o-mini", base_url=s.base_url, api_key=KEY, options=o)
    return make_model("anthropic:claude-3-5-haiku-latest", base_url=s.anthropic_base_url, api_key=KEY, options=o)


def gradient_request() -> Request:
    return Request.chat("You critique prompts.", "Why did the prompt fail?", tag="textgrad.gradient")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_on_text_sees_growing_prefixes_before_the_call_ends_then_the_recorded_text(provider):
    seen: list[tuple[float, TextSoFar]] = []
    with StubServer(responder=lambda body: GRADIENT, chunk_delay_s=0.12) as s:
        model = model_for(provider, s, on_text=lambda t: seen.append((time.monotonic(), t)))
        res = Runner(concurrency=2).run(model, [gradient_request()])
        ended = time.monotonic()
    c = res.completions[0]
    assert c.ok and c.text == GRADIENT
    partial = [t for _, t in seen if not t.done]
    done = [t for _, t in seen if t.done]
    assert len(partial) >= 3, [t.text for t in partial]
    assert len(done) == 1 and seen[-1][1] is done[0]  # once at the end, and last
    assert done[0].text == c.text  # the last text is exactly what is recorded
    texts = [t.text for t in partial]
    for a, b in zip(texts, texts[1:]):
        assert b.startswith(a) and len(b) > len(a)  # growing prefixes
    assert done[0].text.startswith(texts[-1])
    assert len(partial[0].text) < len(GRADIENT) / 2  # the first words came well before the last
    assert all(at < ended for at, _ in seen)
    assert {t.tag for _, t in seen} == {"textgrad.gradient"} and len({t.call for _, t in seen}) == 1
    assert all(KEY not in repr(t) for _, t in seen)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_on_text_is_not_called_when_the_reply_is_not_streamed(provider):
    seen: list[TextSoFar] = []
    with StubServer(responder=lambda body: GRADIENT, chunk_delay_s=0.01) as s:
        res = Runner(concurrency=2).run(model_for(provider, s, stream=False, on_text=seen.append),
                                        [gradient_request()])
        streamed = [bool(r.body.get("stream")) for r in s.recorded()]
    assert res.completions[0].ok and res.completions[0].text == GRADIENT
    assert streamed == [False] and seen == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_updates_are_throttled_and_concurrent_calls_are_told_apart(provider):
    long_reply = " ".join(f"word{i}" for i in range(400))
    seen: list[TextSoFar] = []
    with StubServer(responder=lambda body: long_reply) as s:  # 400 chunks as fast as the server writes
        reqs = [Request.chat(None, f"edit {i}", tag="protegi.edit") for i in range(3)]
        res = Runner(concurrency=3).run(model_for(provider, s, on_text=seen.append), reqs)
    assert all(c.ok and c.text == long_reply for c in res.completions)
    calls = {t.call for t in seen}
    assert len(calls) == 3
    for call in calls:
        mine = [t for t in seen if t.call == call]
        assert len(mine) < 100  # far fewer updates than chunks
        assert mine[-1].done and mine[-1].text == long_reply and sum(t.done for t in mine) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_failing_display_callback_never_breaks_the_call(provider):
    def broken(t: TextSoFar) -> None:
        raise RuntimeError("display went away")

    with StubServer(responder=lambda body: GRADIENT, chunk_delay_s=0.01) as s:
        res = Runner(concurrency=2).run(model_for(provider, s, on_text=broken), [gradient_request()])
    assert res.completions[0].ok and res.completions[0].text == GRADIENT


def test_job_progress_keeps_the_latest_text_per_call_and_only_recent_calls():
    p = JobProgress()
    p.show_text(TextSoFar(1, "textgrad.gradient", "The", False))
    p.show_text(TextSoFar(2, "textgrad.update", "New", False))
    p.show_text(TextSoFar(1, "textgrad.gradient", "The prompt", True))
    assert [(t.call, t.text, t.done) for t in p.live_texts()] == [(1, "The prompt", True), (2, "New", False)]
    for call in range(3, 3 + LIVE_TEXTS_KEPT):
        p.show_text(TextSoFar(call, "protegi.edit", f"c{call}", False))
    kept = [t.call for t in p.live_texts()]
    assert len(kept) == LIVE_TEXTS_KEPT and 1 not in kept and 2 not in kept


def test_forward_calls_do_not_stream_text_to_the_page(tmp_path):
    from core.session import Models
    from core.config import SessionConfig

    cfg = SessionConfig(task={"name": "pubmedqa"}, method="textgrad", forward="openai:gpt-4o-mini",
                        backward="anthropic:claude-3-5-haiku-latest")
    sink = lambda t: None  # noqa: E731
    m = Models.from_config(cfg, Runner(), keys={"openai": KEY, "anthropic": KEY},
                           options=ClientOptions(on_text=sink))
    assert m.backward.options.on_text is sink and m.forward.options.on_text is None


def _live_text_app() -> None:
    from core.llm import TextSoFar
    from core.progress import JobProgress
    from ui import live_text

    p = JobProgress()
    p.show_text(TextSoFar(1, "textgrad.gradient", "<script>alert('x')</script> **bold** <b>tag</b>", False))
    p.show_text(TextSoFar(2, "textgrad.update", "<img src=x onerror=alert(1)>", True))
    live_text.draw(p)


def test_the_live_text_shows_hostile_text_literally_never_as_html():
    at = AppTest.from_function(_live_text_app).run(timeout=30)
    assert not at.exception
    assert [c.value for c in at.caption] == ["Writing the gradient…", "Candidate (written)"]
    assert [c.value for c in at.code] == ["<script>alert('x')</script> **bold** <b>tag</b>",
                                          "<img src=x onerror=alert(1)>"]
    assert not [m for m in at.markdown if "<" in m.value]  # no model text reaches Markdown or HTML
    assert not at.get("html")


def test_a_textgrad_step_streams_only_optimiser_calls_and_records_their_final_text(tmp_path):
    from core.session import Models, Session, SessionConfig
    from tests.fake_model import stub_responder

    seen: list[TextSoFar] = []
    with StubServer(responder=stub_responder(), chunk_delay_s=0.001) as s:
        cfg = SessionConfig(task={"name": "pubmedqa"}, method="textgrad", preset="AutoMedPrompt paper",
                            forward="openai:fwd", backward="openai:bwd", forward_base_url=s.base_url,
                            backward_base_url=s.base_url, val_limit=4, seed=1)
        models = Models.from_config(cfg, Runner(concurrency=4), options=ClientOptions(on_text=seen.append))
        session = Session.create(cfg, root=tmp_path / "sessions", models=models)
        session.run_baseline()
        step = session.start_step()
        session.close()
    assert seen and {t.tag for t in seen} <= {"textgrad.loss", "textgrad.gradient", "textgrad.update"}
    finals = {t.text for t in seen if t.done}
    assert step.proposal.gradients
    for g in step.proposal.gradients:
        assert g.call is not None and g.call.reply in finals  # the recorded reply is the last streamed text
