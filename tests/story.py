"""A session whose every decision is constructed (tests only): an override, a gate accept, a gate reject and
a reject-all, with ProTeGi's gradients, edits and paraphrases from the scripted fake optimiser."""

from __future__ import annotations

from pathlib import Path

from core.llm import ModelSpec
from core.runner import Runner
from core.session import Models, Session, SessionConfig
from tests.fake_model import FakeModel, TableModel

SEED = "Answer the question about the abstract."
BETTER = "Read the abstract, weigh the evidence, then answer."
WORSE = "Answer at once."


def story_session(root: Path, *, bwd: FakeModel | None = None, val: int = 10) -> Session:
    """Four steps: 1 a candidate the gate rejects and the person accepts; 2 a hand edit the gate accepts;
    3 a hand edit the gate rejects; 4 every candidate rejected by the person."""
    fwd = TableModel()
    bwd = bwd or FakeModel()
    fwd.spec, bwd.spec = ModelSpec("fake", "fwd"), ModelSpec("fake", "bwd")
    cfg = SessionConfig(task={"name": "pubmedqa"}, method="protegi", preset="quick", forward="fake:fwd",
                        backward="fake:bwd", policy="strict", val_limit=val, seed_prompt=SEED)
    s = Session.create(cfg, root=root, models=Models(fwd, bwd, Runner(cache=None, concurrency=8)))
    fwd.learn(s.task)
    ids = [e.id for e in s.val_examples()]
    half = set(ids[: len(ids) // 2])
    fwd.table[SEED] = half  # a candidate the table does not know answers every question wrong
    s.run_baseline()
    st = s.start_step()
    s.decide("accept", candidate=st.proposal.candidates[0].id)
    s.validate()
    s.confirm(True)  # the gate rejects (0 right against half), the person accepts
    accepted = s.current.prompt
    fwd.table[BETTER] = set(ids)
    s.start_step()
    s.decide("edit", prompt=BETTER)
    s.validate()
    s.confirm()  # all right against none: the gate accepts
    fwd.table[WORSE] = set(ids[:1])
    s.start_step()
    s.decide("edit", prompt=WORSE)
    s.validate()
    s.confirm()  # one right against all: the gate rejects
    s.start_step()
    s.decide("reject")
    assert accepted != SEED
    return s
