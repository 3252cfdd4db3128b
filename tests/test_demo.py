"""The shipped demo (core/data/demo): opened from the first page with no key, no provider and no network, every
page walked; explain mode; `pgs demo`. The bundle is the real recording, so the tests read their expectations
from it (how many steps, whether any was accepted), never from constants."""

from __future__ import annotations

import fnmatch
import json
import socket
import subprocess
import tomllib

import pytest

from core import llm
from core.bundle import load_bundle
from core.demo import DEMO_BUNDLE, recording
from core.session import Session, list_sessions
from tests.conftest import ROOT, pgs_cmd
from tests.test_app import PAGES, check, goto, markdowns, new_app, plotly_spec
from ui.explain import TEXTS

MODEL_WORDS = ("Qwen2.5-Coder-0.5B", "2026-12-02")


@pytest.fixture
def env(app_test_env):
    return app_test_env


@pytest.fixture
def no_network(monkeypatch):
    """Every outgoing connection (socket.create_connection, socket.connect / connect_ex: urllib, httpx, the
    SDKs) is recorded and refused; the test fails if the list is not empty."""
    tried: list[str] = []

    def refuse(*args, **kwargs):
        tried.append(repr(args[:2])[:200])
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return tried


def unescaped(at) -> str:
    """All Markdown-ish text of the page (main and sidebar), with Markdown's backslash escapes removed."""
    return "\n".join(markdowns(at)).replace("\\", "")


def bundle() -> dict:
    return json.loads(DEMO_BUNDLE.read_text(encoding="utf-8"))


def open_demo(at):
    check(at.button(key="open_demo").click().run())
    sid = at.session_state["sid"]
    assert sid
    return sid


# ---------------------------------------------------------------------------------------------


def test_the_demo_bundle_is_a_real_recording_that_names_its_model_and_ships_with_the_package():
    b = load_bundle(DEMO_BUNDLE.read_bytes())  # parses, validates, and matches its content hashes
    cfg = b["events"][0]["config"]
    rec = recording()
    assert rec.recorded == "2026-12-02" and "0.5B" in rec.model and "llama.cpp" in rec.model
    assert "qwen2.5-coder-0.5b" in cfg["forward"].lower() and "qwen2.5-coder-0.5b" in cfg["backward"].lower()
    assert "not improved" in rec.what
    assert b["missing_responses"] == 0 and b["responses"]
    assert any(e["type"] == "step_started" for e in b["events"])
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    rel = DEMO_BUNDLE.relative_to(ROOT / "core").as_posix()
    assert "core" in data["packages"] and any(fnmatch.fnmatch(rel, pat) for pat in data["package-data"]["core"])


def test_open_the_demo_with_no_key_no_provider_no_network_and_walk_every_page(env, monkeypatch, no_network):
    monkeypatch.setattr(llm, "_registry", {})  # not even the test's fake provider
    at = check(new_app())
    assert any("No session yet" in m.value for m in at.subheader)
    sid = open_demo(at)
    root = env / "sessions"
    n_events = len(bundle()["events"])
    s = Session.open(sid, root=root, readonly=True)
    assert s.id == sid and not s.servers_confirmed  # imported: no call can go anywhere before a 'repointed'
    steps, accepted = len(s.steps), sum(1 for x in s.steps if x.outcome == "accepted")
    assert steps >= 1

    for page in PAGES:
        goto(at, page)
        text = unescaped(at)
        assert all(w in text for w in MODEL_WORDS), (page, text[:500])  # model and date on every page
        assert not [b for b in at.button if b.key in ("confirm_servers", "run_step", "run_baseline", "auto_run")]
        assert not [t for t in at.text_input if t.key and t.key.startswith("repoint_")]  # asks for no server/key

    goto(at, "overview")
    assert any("Read-only" in w.value for w in at.warning)
    goto(at, "optimize")
    assert any("The recorded steps" in h.value for h in at.subheader)
    table = at.dataframe[0].value  # the recorded steps table
    assert len(table) == steps and list(table["step"]) == [x.index for x in s.steps]
    no_acceptance = any("No step of this recording was accepted" in i.value for i in at.info)
    assert no_acceptance == (accepted == 0)  # said on screen exactly when it is the recorded result
    goto(at, "history")
    assert plotly_spec(at, 0)["data"]  # the validation chart
    goto(at, "evaluate")
    versions = at.dataframe[0].value  # the recorded versions
    assert list(versions["validation"]) == [v.accuracy for v in s.versions]
    assert at.button(key="run_eval").disabled  # scoring on test needs a model: off

    assert no_network == []
    again = Session.open(sid, root=root, readonly=True)
    assert len(again.events) == n_events  # browsing wrote nothing into the demo
    at2 = check(new_app())
    assert open_demo(at2) == sid and [r["id"] for r in list_sessions(root)] == [sid]  # reopened, not copied


def test_a_demo_step_shows_its_recorded_minibatch_gradients_and_gate(env, no_network):
    at = check(new_app())
    sid = open_demo(at)
    s = Session.open(sid, root=env / "sessions", readonly=True)
    goto(at, "optimize")
    shown = [x for x in s.steps if x.proposal is not None]
    if not shown:
        pytest.fail("the demo recording has no step with a proposal")
    labels = at.selectbox(key="demo_step").options
    at.selectbox(key="demo_step").set_value(s.steps.index(shown[0]))
    check(at.run())
    assert len(labels) == len(s.steps)
    text = unescaped(at)
    assert f"Gradients ({len(shown[0].proposal.gradients)})" in text
    assert f"Candidates ({len(shown[0].proposal.candidates)})" in text
    assert no_network == []


def explained(at) -> set[str]:
    """The explain texts the page shows (main area and sidebar)."""
    shown = [c.value.replace("\\", "") for c in list(at.caption) + list(at.sidebar.caption)]
    return {k for k, t in TEXTS.items() if any(t in c for c in shown)}


def test_explain_adds_captions_only_when_on_and_is_remembered_across_pages(env, no_network):
    at = check(new_app())
    sid = open_demo(at)
    s = Session.open(sid, root=env / "sessions", readonly=True)
    assert at.toggle(key="explain_toggle").value is False
    seen_off: set[str] = set()
    for page in PAGES:
        goto(at, page)
        seen_off |= explained(at)
    assert seen_off == set()  # off by default: not one explanation anywhere

    check(at.toggle(key="explain_toggle").set_value(True).run())
    seen: set[str] = set()
    for page in PAGES:
        goto(at, page)
        assert at.toggle(key="explain_toggle").value is True  # remembered across pages
        seen |= explained(at)
    for page, picker in (("optimize", "demo_step"), ("history", "hist_step")):
        goto(at, page)
        for i in range(len(s.steps)):  # every recorded step's panels
            at.selectbox(key=picker).set_value(i)
            check(at.run())
            seen |= explained(at)
    expected = {"loop", "versions", "interval", "grid", "splits", "models", "method", "cache", "test"}
    if any(x.forward for x in s.steps):
        expected |= {"minibatch"}
    if any(x.proposal for x in s.steps):
        expected |= {"gradient", "candidate", "lineage"}
    if any(x.proposal and x.proposal.bandit for x in s.steps):
        expected |= {"bandit"}
    if any(x.gate for x in s.steps):
        expected |= {"gate", "mcnemar"}
    assert expected <= seen, expected - seen

    check(at.toggle(key="explain_toggle").set_value(False).run())
    assert explained(at) == set()
    goto(at, "history")
    assert explained(at) == set() and at.toggle(key="explain_toggle").value is False
    assert no_network == []


def test_every_explain_text_is_one_or_two_plain_sentences():
    for key, text in TEXTS.items():
        sentences = [x for x in text.replace("?\"", "\"").split(". ") if x.strip()]
        assert 1 <= len(sentences) <= 3 and len(text) < 320, key
        assert "<" not in text and "*" not in text and "`" not in text, key  # plain: no HTML, no Markdown


def test_pgs_demo_prints_the_bundle_path_and_replays_it_identically(pgs_env):
    out = subprocess.run(pgs_cmd() + ["demo"], capture_output=True, text=True, timeout=600, cwd=pgs_env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == str(DEMO_BUNDLE) and DEMO_BUNDLE.is_file()
    assert all(w in lines[1] for w in MODEL_WORDS)
    assert lines[-1].startswith("identical; responses missing from the bundle: 0")
    assert not (pgs_env / "sessions").exists()  # a replay writes nothing into the user's folders


def test_pgs_demo_with_a_missing_or_tampered_bundle_is_one_line_and_non_zero(tmp_path, monkeypatch, capsys):
    from core import demo
    from core.cli import main

    monkeypatch.setattr(demo, "DEMO_BUNDLE", tmp_path / "gone.json")
    assert main(["demo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0]

    b = bundle()
    step = next(e for e in b["events"] if e["type"] == "baseline")
    step["prompt"] = step["prompt"] + " (edited)"
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(b), encoding="utf-8")
    monkeypatch.setattr(demo, "DEMO_BUNDLE", tampered)
    assert main(["demo"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "modified after export" in err[0], err
