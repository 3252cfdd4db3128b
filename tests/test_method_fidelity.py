"""Method fidelity (issue 9, parts B, C, D): each test is built on model outputs constructed here."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from pathlib import Path

import pytest

from core import bandits
from core.bundle import replay_bundle
from core.cache import ResponseCache, cache_key
from core.evaluate import EvalReport, EvalRow
from core.llm import AnthropicModel, Completion, ModelSpec, OpenAIModel, Request
from core.parsing import parse_answer, parse_answer_detail
from core.protegi import ANSWER_EXCERPT_CHARS, ProtegiEngine
from core.runner import Runner, run_sync
from core.session import Models, Session, SessionConfig
from core.tasks import builtin_spec, load_task
from tests.fake_model import FakeModel, _between
from tests.stub_server import ANTHROPIC_PATH, StubServer

FIXTURE = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "bundle-2026-12-01-textgrad.json"


class Scripted(FakeModel):
    """FakeModel with chosen replies for some meta-prompts (tag -> function(req) -> text or (text, finish))."""

    def __init__(self, script: dict, **kw):
        super().__init__(**kw)
        self.script = script
        self.requests: list[Request] = []

    async def acomplete(self, req: Request) -> Completion:
        self.requests.append(req)
        if req.tag in self.script:
            self.calls[req.tag] += 1
            out = self.script[req.tag](req)
            text, finish = out if isinstance(out, tuple) else (out, "stop")
            return Completion(text=text, input_tokens=10, output_tokens=10, model=str(self.spec), finish_reason=finish)
        c = await super().acomplete(req)
        c.finish_reason = "stop"
        return c


def make(tmp_path, method="textgrad", preset="quick", fwd=None, bwd=None, cache=False, task="pubmedqa", **kw):
    fwd, bwd = fwd or FakeModel(), bwd or FakeModel()
    fwd.spec, bwd.spec = ModelSpec("fake", "fwd"), ModelSpec("fake", "bwd")
    runner = Runner(cache=ResponseCache(tmp_path / "cache") if cache else None, concurrency=8)
    cfg = SessionConfig(task=builtin_spec(task), method=method, preset=preset, forward="fake:fwd", backward="fake:bwd", **kw)
    return Session.create(cfg, root=tmp_path / "sessions", models=Models(fwd, bwd, runner)), fwd, bwd


def variable(req: Request) -> str:
    return _between(req.messages[-1][1], "<VARIABLE> ", " </VARIABLE>")


def update_text(st) -> str:
    call = st.proposal.candidates[0].call if st.proposal.candidates else st.proposal.calls[-1]
    return call.messages[-1][1]


# ---------- B4: finish reason, cut-off proposals ----------

def test_openai_sdk_records_finish_reason_length_from_the_server():
    with StubServer(faults=["length", None]) as srv:
        m = OpenAIModel(ModelSpec("openai", "stub-model", srv.base_url), api_key="sk-test-0000")

        async def go():
            try:
                return [await m.acomplete(Request.chat(None, "hi", max_tokens=5)) for _ in range(2)]
            finally:
                await m.aclose()

        cut, whole = run_sync(go())
    assert (cut.finish_reason, cut.cut_off) == ("length", True)
    assert (whole.finish_reason, whole.cut_off) == ("stop", False)


def test_anthropic_sdk_records_stop_reason_max_tokens_and_sends_no_temperature():
    with StubServer(faults=["length"]) as srv:
        m = AnthropicModel(ModelSpec("anthropic", "claude-x", srv.anthropic_base_url), api_key="sk-ant-test-0000")

        async def go():
            try:
                return await m.acomplete(Request.chat("sys", "hi", temperature=0.7, max_tokens=5))
            finally:
                await m.aclose()

        c = run_sync(go())
        body = [r.body for r in srv.recorded() if r.path == ANTHROPIC_PATH][0]
    assert c.finish_reason == "max_tokens" and c.cut_off
    assert "temperature" not in body  # the SDK here takes none ...
    spec = ModelSpec("anthropic", "claude-x")  # ... so the cache key does not pretend it was sent
    assert cache_key(spec, Request.chat(None, "q", temperature=0.0)) == cache_key(spec, Request.chat(None, "q", temperature=0.7))
    o = ModelSpec("openai", "gpt-4o-mini")  # OpenAI sends it: its keys still tell temperatures apart
    assert cache_key(o, Request.chat(None, "q", temperature=0.0)) != cache_key(o, Request.chat(None, "q", temperature=0.7))


def test_finish_reason_survives_the_cache(tmp_path):
    cache = ResponseCache(tmp_path / "c")
    cache.put("k" * 64, Completion(text="x", finish_reason="length"))
    assert cache.get("k" * 64).finish_reason == "length"


def test_a_model_that_always_cuts_off_its_update_never_gets_a_step_accepted(tmp_path):
    # an unclosed <IMPROVED_VARIABLE> span, and a closed one whose call still ended at max_tokens
    def cut(req):
        if req.sample % 2:
            return f"<IMPROVED_VARIABLE>{variable(req)} Weigh the evidence carefully and", "length"
        return f"<IMPROVED_VARIABLE>{variable(req)} Weigh the evidence.</IMPROVED_VARIABLE>", "length"

    s, _, _ = make(tmp_path, bwd=Scripted({"textgrad.update": cut}), val_limit=10, patience=3)
    s.run_auto(3)
    proposed = [c for st in s.steps if st.proposal for c in st.proposal.candidates]
    assert proposed and all("cut off" in c.flags for c in proposed)
    assert all(c.call.finish_reason == "length" for c in proposed)
    assert not [st for st in s.steps if st.outcome == "accepted"] and len(s.versions) == 1
    s.close()


def test_unclosed_edit_span_is_flagged_cut_off(tmp_path):
    def edit(req):
        prompt = _between(req.messages[-1][1], 'My current prompt is:\n"', '"\n\nBut')
        return f"<START>{prompt} Weigh the evidence in every abstract and", "length"

    s, _, _ = make(tmp_path, method="protegi", bwd=Scripted({"protegi.edit": edit}), val_limit=5)
    s.run_baseline()
    st = s.start_step()
    edits = [c for c in st.proposal.candidates if c.origin == "edit"]
    assert edits and all("cut off" in c.flags for c in edits)
    s.close()


# ---------- B1: the update's <FEEDBACK> tags hold the current gradient ----------

GRADIENT = "Tell the model to quote the decisive sentence of the abstract before answering."


def test_update_puts_the_current_gradient_in_feedback_tags_inside_the_context(tmp_path):
    bwd = Scripted({"textgrad.gradient": lambda r: f"<FEEDBACK>{GRADIENT}</FEEDBACK>"})
    s, _, _ = make(tmp_path, preset="AutoMedPrompt paper", bwd=bwd, val_limit=5)
    s.run_baseline()
    st = s.start_step()
    text = update_text(st)
    context = re.search(r"<CONTEXT>(.*)</CONTEXT>", text, re.S).group(1)
    feedback = re.findall(r"<FEEDBACK>(.*?)</FEEDBACK>", context, re.S)
    assert [f.strip() for f in feedback] == [GRADIENT]
    assert "<CONVERSATION>" in context and "<LM_OUTPUT>" in context  # textgrad's GRADIENT_TEMPLATE structure
    assert "using the feedback provided in <FEEDBACK> tags" in text
    s.close()


def test_sessions_recorded_before_template_versions_keep_their_prompts(tmp_path):
    s, _, _ = make(tmp_path, preset="AutoMedPrompt paper", val_limit=5, template_version=1)
    s.run_baseline()
    st = s.start_step()
    assert "<FEEDBACK>" not in re.search(r"<CONTEXT>(.*)</CONTEXT>", update_text(st), re.S).group(1)
    assert len(st.minibatch_ids) == 5  # the old preset's batch
    s.close()
    assert SessionConfig.from_json({"task": {"name": "pubmedqa"}}).template_version == 1


def test_the_recorded_textgrad_fixture_reads_as_version_1_and_replays_identically():
    import json

    first = json.loads(FIXTURE.read_text("utf-8"))["events"][0]["config"]
    assert SessionConfig.from_json(first).template_version == 1  # recorded before versions: the old prompts
    out = replay_bundle(FIXTURE.read_bytes())
    assert out.matches and out.misses == 0


# ---------- B2: memory pairs each feedback with the prompt it criticised ----------

def test_memory_pairs_each_feedback_with_the_prompt_it_criticised(tmp_path):
    grads = iter(f"<FEEDBACK>Feedback number {i} on the prompt.</FEEDBACK>" for i in range(1, 20))
    s, _, _ = make(tmp_path, bwd=Scripted({"textgrad.gradient": lambda r: next(grads)}), val_limit=10,
                   params={"candidates": 1})
    s.run_auto(2)
    first, second = s.steps[0], s.steps[1]
    text = update_text(second)
    block = re.search(r"<ITERATION 1>(.*?)</ITERATION 1>", text, re.S).group(1)
    criticised = re.search(r"<PROMPT>\s*(.*?)\s*</PROMPT>", block, re.S).group(1)
    feedback = re.search(r"<PAST_FEEDBACK[^>]*>\s*(.*?)\s*</PAST_FEEDBACK>", block, re.S).group(1)
    revision = re.search(r"<REVISION[^>]*>\s*(.*?)\s*</REVISION>", block, re.S).group(1)
    assert criticised == first.proposal.gradients[0].parent == s.versions[0].prompt
    assert feedback == first.proposal.gradients[0].text
    assert revision == first.decision["prompt"]
    assert "validation_accuracy" not in text  # the gate's data stays out unless the session asks
    s.close()


# ---------- B3: the AutoMedPrompt paper preset is the paper's code ----------

def test_automedprompt_preset_matches_the_papers_code(tmp_path):
    for task, batch, kind in (("pubmedqa", 1, "yes/no/maybe"), ("medqa", 5, "multiple-choice")):
        cfg = SessionConfig(task={"name": task}, method="textgrad", preset="AutoMedPrompt paper").engine_config()
        assert (cfg.memory, cfg.batch_size, cfg.candidates, cfg.val_questions) == (0, batch, 1, 50)
        assert kind in cfg.role and "This system prompt should not be too verbose" in cfg.role
    s, _, _ = make(tmp_path, preset="AutoMedPrompt paper", task="medqa")
    assert len(s.val_examples()) == 50 and s.config.policy == "strict"
    s.run_baseline()
    st = s.start_step()
    assert len(st.minibatch_ids) == 5 and "should not be too verbose" in update_text(st)
    assert "<PAST_ITERATIONS>" not in update_text(st)
    s.close()


# ---------- C: candidate checks ----------

def test_degenerate_spans_are_not_candidates(tmp_path):
    def edit(req):  # the model's prose quotes the meta-prompt's own words
        return "Each prompt is wrapped with <START> and <END>, as you asked."

    s, _, _ = make(tmp_path, method="protegi", bwd=Scripted({"protegi.edit": edit}), val_limit=5)
    s.run_baseline()
    st = s.start_step()
    assert all(c.prompt.strip().lower() != "and" for c in st.proposal.candidates)
    assert "degenerate" in (st.proposal.note or "")
    assert s.models.backward.calls["protegi.paraphrase"] == 0  # nor is "and" paraphrased at a cost
    s.close()


def test_a_candidate_over_the_word_limit_is_flagged_and_the_policy_skips_it(tmp_path):
    long = " ".join(["Weigh the evidence."] + ["Consider every sentence of the abstract."] * 25)
    s, _, _ = make(tmp_path, bwd=Scripted({"textgrad.update": lambda r: f"<IMPROVED_VARIABLE>{long}</IMPROVED_VARIABLE>"}),
                   val_limit=10, params={"candidates": 1})
    s.run_auto(1)
    c = s.steps[0].proposal.candidates[0]
    assert any(f.startswith("breaks constraint: Keep the prompt under 120 words.") for f in c.flags)
    assert s.steps[0].outcome == "skipped" and len(s.versions) == 1
    s.close()


def test_a_candidate_with_validation_text_cannot_pass_the_gate_without_override(tmp_path):
    task = load_task("pubmedqa")
    val_q = next(iter(task.split("val")[0].inputs.values()))
    leaked = "Weigh the evidence evidence evidence evidence. For example: " + " ".join(val_q.split()[:40])

    def upd(r):
        return f"<IMPROVED_VARIABLE>{leaked}</IMPROVED_VARIABLE>"

    for override in (None, True):
        root = tmp_path / str(override)
        s, _, _ = make(root, bwd=Scripted({"textgrad.update": upd}), val_limit=30, params={"candidates": 1})
        s.run_baseline()
        st = s.start_step()
        c = st.proposal.candidates[0]
        assert "leaks validation data" in c.flags and "val" in c.leaks
        s.decide("accept", candidate=c.id)
        g = s.validate()
        assert g.passed  # the statistics alone would accept it ...
        s.confirm(override)
        assert s.steps[-1].outcome == ("accepted" if override else "rejected")  # ... the leak needs an override
        s.close()


def test_training_text_is_flagged_too():
    from core import candidate_checks as checks

    task = load_task("liar")
    q = " ".join(next(iter(task.split("train")[3].inputs.values())).split()[:30])
    assert "train" in checks.leaked_splits("Decide carefully. " + q, task)
    assert checks.leaked_splits("Decide carefully whether the statement is a lie.", task) == []


# ---------- D: TextGrad k candidates ----------

def test_textgrad_draws_k_distinct_cached_update_samples_and_deduplicates(tmp_path):
    def upd(r):  # samples 1 and 2 agree: two distinct candidates out of three
        tail = "" if r.sample == 0 else " Quote the abstract."
        return f"<IMPROVED_VARIABLE>{variable(r)} Weigh the evidence.{tail}</IMPROVED_VARIABLE>"

    bwd = Scripted({"textgrad.update": upd})
    s, _, _ = make(tmp_path, bwd=bwd, cache=True, val_limit=5)
    assert s.config.engine_config().candidates == 3
    s.run_baseline()
    st = s.start_step()
    samples = [r.sample for r in bwd.requests if r.tag == "textgrad.update"]
    assert sorted(samples) == [0, 1, 2]
    assert len(st.proposal.candidates) == 2 and len({c.prompt for c in st.proposal.candidates}) == 2
    keys = {c.call.key for c in st.proposal.candidates}
    assert len(keys) == 2
    n = len(bwd.requests)
    s.close()
    s2, _, bwd2 = make(tmp_path / "again", bwd=Scripted({"textgrad.update": upd}), val_limit=5)
    s2.models.runner.cache = s.models.runner.cache  # same cache: the same samples come back, nothing sent
    s2.run_baseline()
    st2 = s2.start_step()
    assert [c.prompt for c in st2.proposal.candidates] == [c.prompt for c in st.proposal.candidates]
    assert not [r for r in bwd2.requests if r.tag == "textgrad.update"] and n > 0
    s2.close()


# ---------- B6: repeated error groups get distinct sample indices ----------

def test_repeated_error_groups_get_distinct_sample_indices_and_keys(tmp_path):
    bwd = Scripted({})
    s, _, _ = make(tmp_path, method="protegi", bwd=bwd, cache=True, val_limit=5)
    s.run_baseline()
    ctx = s._ctx(1, 0, None, None)
    ex = s.task.split("train")[0]
    row = EvalRow(ex.id, "", ex.label, "Answer: maybe", "maybe" if ex.label != "maybe" else "yes", False)
    report = EvalReport(s.current.prompt, [row], list(s.task.labels))
    engine = ProtegiEngine(replace(s.config.engine_config(), n_groups=3))

    async def go():
        try:
            return await engine._expand(ctx, 0, s.current.prompt, report)
        finally:
            await s.models.backward.aclose()

    grads, _ = run_sync(go())
    reqs = [r for r in bwd.requests if r.tag == "protegi.gradient"]
    assert len(reqs) == 3 and len({r.sample for r in reqs}) == 3  # one failure: the three groups are identical
    assert len({cache_key(bwd.spec, r) for r in reqs}) == 3
    assert len({g.call.key for g in grads if g.call}) == 3
    s.close()


# ---------- B7: UCB-E's exploration parameter ----------

def test_ucb_e_exploration_parameter_reaches_the_bandit(tmp_path, monkeypatch):
    seen = {}
    real = bandits.Bandit  # the ask/tell bandit ProTeGi's screen drives on the step's loop

    def spy(*a, **kw):
        seen.update(kw)
        return real(*a, **kw)

    monkeypatch.setattr(bandits, "Bandit", spy)
    s, _, _ = make(tmp_path, method="protegi", val_limit=5, params={"bandit": "ucb-e", "ucb_e_a": 7.5})
    s.run_baseline()
    st = s.start_step()
    assert st.proposal.bandit["algorithm"] == "ucb-e" and seen["a"] == 7.5
    s.close()


# ---------- B9: ProTeGi's error blocks show the model's reasoning ----------

def test_error_blocks_include_a_bounded_excerpt_of_the_raw_answer(tmp_path):
    reasoning = "The cohort was small and the confidence interval crossed one. " * 80  # ~5,000 characters

    class Verbose(FakeModel):
        def forward(self, system, user):
            return reasoning + "\nAnswer: maybe"

    bwd = Scripted({})
    s, _, _ = make(tmp_path, method="protegi", fwd=Verbose(), bwd=bwd, val_limit=5)
    s.run_baseline()
    s.start_step()
    grad = next(r for r in bwd.requests if r.tag == "protegi.gradient").messages[-1][1]
    assert "the confidence interval crossed one" in grad and "Answer: maybe" in grad
    block = grad.split("## Example 2")[0]
    excerpt = re.search(r'Model answer \(excerpt\): "(.*)"', block, re.S).group(1)
    assert len(excerpt) <= ANSWER_EXCERPT_CHARS
    s.close()


# ---------- B10: the parser ----------

def test_letter_with_another_options_text_is_ambiguous_not_that_letter():
    choices = {"A": "Insulin", "B": "Metformin", "C": "Glipizide", "D": "Acarbose"}
    labels = list(choices)
    d = parse_answer_detail("Reasoning...\nAnswer: A. Glipizide", labels, choices)
    assert d.label is None and d.ambiguous
    assert parse_answer("Reasoning...\nAnswer: A. Insulin", labels, choices) == "A"
    from core.evaluate import row_for
    task = load_task("medqa")
    ex = task.split("train")[0]
    other = next(k for k in ex.choices if k != ex.label)
    row = row_for(task, ex, Completion(text=f"Answer: {ex.label}. {ex.choices[other]}", finish_reason="stop"))
    assert row.parsed is None and row.ambiguous and row.finish_reason == "stop"  # recorded on the row


def test_liar_replies_that_call_it_a_lie_are_parsed():
    task = load_task("liar")
    assert task.parse("The figures are invented, so it is a lie.") == "Yes"
    assert task.parse("The record matches what he said, so it is not a lie.") == "No"
    assert task.parse("Answer: No") == "No"
