"""App tests (AppTest) for the person's marks: lock toggles and a lock-breaking candidate taken by override,
the History "Blame" tab, disputing a minibatch and a validation question, and History's table of disputes."""

from __future__ import annotations

import re

import pytest

from core import llm
from core.blame import split_sentences
from core.llm import Request
from tests.fake_model import FakeModel
from tests.test_app import check, click, goto, markdowns, new_app, open_session, texts

_VARIABLE = re.compile(r"<VARIABLE> (.*?) </VARIABLE>", re.S)


class DropsFirstSentence(FakeModel):
    """The scripted optimiser, except that the update's first sample drops the prompt's first sentence."""

    def reply(self, req: Request) -> str:
        out = super().reply(req)
        if req.tag == "textgrad.update" and req.sample == 0:
            user = next(c for r, c in reversed(req.messages) if r == "user")
            prompt = _VARIABLE.search(user).group(1)
            rest = " ".join(split_sentences(prompt)[1:])
            out = f"<IMPROVED_VARIABLE>{rest} Weigh the evidence.</IMPROVED_VARIABLE>"
        return out


@pytest.fixture
def env(app_test_env, monkeypatch):
    monkeypatch.setitem(llm._registry, "dropper", lambda spec: DropsFirstSentence(spec=spec))
    monkeypatch.setitem(llm._provider_prices, "dropper", (1.0, 2.0))
    return app_test_env


def create(at, *, backward: str = "fake:scripted", val: int = 10) -> str:
    goto(at, "setup")
    at.text_input(key="forward_spec").set_value("fake:scripted")
    at.text_input(key="backward_spec").set_value(backward)
    at.number_input(key="val_size_pubmedqa").set_value(val)
    at.radio(key="method").set_value("textgrad")
    check(at.run())
    at.selectbox(key="preset_textgrad").set_value("quick")
    check(at.run())
    click(at, "create_session")
    return at.session_state["sid"]


def test_lock_a_sentence_take_a_lock_breaking_candidate_by_override_and_see_blame(env):
    at = new_app()
    sid = create(at, backward="dropper:x")
    goto(at, "optimize")
    first = split_sentences(open_session(env, sid).current.prompt)[0]
    assert f"1. {first}" in texts(at)  # the prompt sentence by sentence, numbered, as text
    check(at.toggle(key=f"lock_{sid}_v0_1").set_value(True).run())
    assert open_session(env, sid).folded.active_locks() == [" ".join(first.split())]
    assert any(e.label.startswith("Lock sentences (1 of") for e in at.expander)

    click(at, "run_step")
    s = open_session(env, sid)
    c0, c1 = s.step.proposal.candidates[:2]
    assert first not in c0.prompt and first in c1.prompt
    assert at.button(key=f"accept_s1_{c0.id}").label == "Accept 1 anyway"
    assert at.button(key=f"accept_s1_{c1.id}").label == "Accept 2"
    assert any("changes locked sentence" in m for m in markdowns(at))
    click(at, f"accept_s1_{c0.id}")
    s = open_session(env, sid)
    decision = [e for e in s.events if e["type"] == "decision"][-1]
    assert decision["candidate"] == c0.id and decision["override"] is True and s.step.gate is not None
    verdict_accepts = any(b.key == "confirm" and b.label == "Confirm: accept" for b in at.button)
    click(at, "confirm" if verdict_accepts else "override")
    s = open_session(env, sid)
    assert s.current.prompt == c0.prompt and s.folded.active_locks() == []  # the locked sentence is gone

    goto(at, "history")
    assert at.selectbox(key="blame_version").value == 1
    labels = [e.label for e in at.expander]
    new = split_sentences(c0.prompt).index("Weigh the evidence.") + 1
    assert f"Sentence {new} · step 1 · update" in " | ".join(labels), labels
    assert not any("seed prompt" in x for x in labels)  # the seed's one sentence was dropped by the override
    check(at.selectbox(key="blame_version").set_value(0).run())
    assert first in texts(at) and "Sentence 1 · seed prompt" in [e.label for e in at.expander]


def test_dispute_a_minibatch_and_a_validation_question_and_history_lists_them(env):
    at = new_app()
    sid = create(at)
    goto(at, "optimize")
    click(at, "run_step")
    reason = next(w for w in at.text_input if (w.key or "").startswith("dispute_reason_s1_"))
    qid = reason.key.removeprefix("dispute_reason_s1_")
    reason.set_value("gold contradicts the <b>abstract</b>")
    at.checkbox(key=f"dispute_ex_s1_{qid}").check()
    click(at, f"dispute_go_s1_{qid}")
    s = open_session(env, sid)
    assert [(d.question, d.exclude) for d in s.disputes] == [(qid, True)]
    assert any("excluded from minibatches and gates" in m for m in markdowns(at))

    accept = [b for b in at.button if (b.key or "").startswith("accept_s1_")]
    accept[0].click().run()
    check(at)
    val_q = at.selectbox(key="dq_gate1").value
    at.text_input(key=f"dispute_reason_gate1_{val_q}").set_value("two annotators disagree")
    at.checkbox(key=f"dispute_ex_gate1_{val_q}").check()
    click(at, f"dispute_go_gate1_{val_q}")
    assert any("Without them" in i.value and "n=9" in i.value for i in at.info), [i.value for i in at.info]

    goto(at, "history")
    table = next(df.value for df in at.dataframe if "reason" in df.value.columns and "from step" in df.value.columns)
    assert table["question"].tolist() == [qid, val_q]
    assert table["reason"].tolist() == ["gold contradicts the <b>abstract</b>", "two annotators disagree"]
