"""Undo: a pending decision changed by a new one, an accepted version reverted by a 'reverted' event (history
is never rewritten); both fold the same on resume and replay identical from a bundle."""

from __future__ import annotations

import subprocess

import pytest

from core.bundle import bundle_bytes, replay_bundle
from core.cache import ResponseCache
from core.session import Session, SessionError
from tests.conftest import pgs_cmd
from tests.test_session import make


def accepted_once(tmp_path):
    """A session whose step 1 the person accepted (an override when the gate says no: an outcome we choose)."""
    s, fwd, bwd = make(tmp_path, cache=True, val_limit=10)
    s.run_baseline()
    st = s.start_step()
    s.decide("accept", candidate=st.proposal.candidates[0].id)
    s.decide("edit", prompt="Answer yes, no or maybe after weighing the evidence.")  # changed before validation
    s.validate()
    s.confirm(accept=True)
    assert len(s.versions) == 2 and s.versions[1].prompt.startswith("Answer yes, no or maybe")
    return s


def test_revert_is_a_new_version_with_the_old_prompt(tmp_path):
    s = accepted_once(tmp_path)
    v = s.revert(0)
    assert (v.number, v.origin, v.reverted_to, v.prompt) == (2, "revert", 0, s.versions[0].prompt)
    assert [e["type"] for e in s.events][-1] == "reverted" and len(s.versions) == 3  # nothing erased
    with pytest.raises(SessionError, match="current version already"):
        s.revert(2)
    with pytest.raises(SessionError, match="no version 7"):
        s.revert(7)
    st = s.start_step()
    assert st.parent_version == 2 and st.beam == [s.versions[0].prompt]
    with pytest.raises(SessionError, match="is open"):
        s.revert(1)
    sid, root = s.id, s.root
    live = [(x.number, x.prompt, x.origin, x.reverted_to) for x in s.versions]
    s.close()
    again = Session.open(sid, root=root, readonly=True)
    assert [(x.number, x.prompt, x.origin, x.reverted_to) for x in again.versions] == live


def test_replay_of_a_changed_decision_and_a_revert_is_identical(tmp_path):
    s = accepted_once(tmp_path)
    s.revert(0)
    st = s.start_step()
    s.decide("skip")
    data = bundle_bytes(Session.open(s.id, root=s.root, readonly=True), ResponseCache(tmp_path / "cache"))
    s.close()
    r = replay_bundle(data)
    assert r.matches and r.first_difference is None and r.misses == 0, (r.first_difference, r.steps)
    assert {"step": 1, "action": "revert to version 0", "recorded_outcome": "reverted",
            "replayed_outcome": "reverted"} in r.steps


def test_cli_revert(tmp_path, pgs_env):
    s = accepted_once(pgs_env)
    sid = s.id
    s.close()
    out = subprocess.run(pgs_cmd() + ["revert", sid, "--to", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    v0 = Session.open(sid, root=pgs_env / "sessions", readonly=True).versions[0]
    assert out.stdout.strip() == (f"session {sid}: version 2 is version 0's prompt again (val {v0.accuracy:.3f}); "
                                  f"the next step starts from it")
    bad = subprocess.run(pgs_cmd() + ["revert", sid, "--to", "9"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip() == ("pgs: error: There is no version 9; this session has "
                                                          "versions 0 to 2.")


def test_blame_of_a_reverted_version_is_that_of_the_version_it_restores(tmp_path):
    from core.blame import blame

    s = accepted_once(tmp_path)
    s.revert(0)
    assert [b.to_json() for b in blame(s, 2)] == [b.to_json() for b in blame(s, 0)]
    assert all(b.origin == "seed" for b in blame(s))
    s.close()
