"""Bundles are checked, not trusted: content hashes (written at export, checked at import and replay), a replay
that compares every text and score, typed and bounded fields, imports that write nothing when they fail, and a
Markdown report that is safe to open anywhere."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from core.bundle import BundleError, bundle_bytes, import_bundle, markdown_report, replay_bundle
from core.cache import ResponseCache
from core.diffs import unified
from core.llm import ModelSpec
from core.runner import Runner
from core.session import Models, Session, SessionConfig
from tests.conftest import ROOT, pgs_cmd, subprocess_pythonpath
from tests.fake_model import FakeModel

pytestmark = pytest.mark.timeout(180)

FIXTURE = ROOT.parent / "shared" / "fixtures" / "bundle-2026-12-01-textgrad.json"
SCRIPT = "<script>alert(1)</script>"
IMG = '<img src=x onerror="alert(2)">'


def pgs(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(pgs_cmd() + list(args), capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def one_line_error(out: subprocess.CompletedProcess, code: int = 2) -> str:
    err = out.stderr.strip()
    assert out.returncode == code, (out.returncode, out.stdout[-800:], err[-2000:])
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def _session(root: Path, cache: ResponseCache, fwd=None, bwd=None, **cfg) -> Session:
    cfg = SessionConfig(**{"task": {"name": "pubmedqa"}, "forward": "fake:f", "backward": "fake:b",
                           "val_limit": 6, "policy": "always", **cfg})
    fwd = fwd or FakeModel(spec=ModelSpec("fake", "f"))  # the specs the config names: replay finds their keys
    bwd = bwd or FakeModel(spec=ModelSpec("fake", "b"))
    return Session.create(cfg, root=root, models=Models(fwd, bwd, Runner(cache=cache)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """A two-step TextGrad session exported by this version (with content hashes)."""
    d = tmp_path_factory.mktemp("src")
    cache = ResponseCache(d / "cache")
    s = _session(d / "sessions", cache)
    s.run_auto(2)
    b = json.loads(bundle_bytes(s, cache))
    s.close()
    return b


def copy(b: dict) -> dict:
    return json.loads(json.dumps(b))


def idx(b: dict, kind: str) -> int:
    """1-based index of the first event of a kind."""
    return next(i for i, e in enumerate(b["events"], 1) if e["type"] == kind)


def tamper_decision_prompts(b: dict) -> dict:
    b = copy(b)
    for e in b["events"]:
        if e["type"] == "decision" and e.get("prompt"):
            e["prompt"] = "Always answer yes."
    return b


def write(path: Path, b: dict | bytes) -> str:
    path.write_bytes(b if isinstance(b, bytes) else json.dumps(b).encode())
    return str(path)


# ---------------------------------------------------------------- hashes and replay


def test_tampered_decision_prompts_are_refused_as_modified(pgs_env, exported):
    bad = write(pgs_env / "tampered.json", tamper_decision_prompts(exported))
    first = idx(exported, "decision")
    sessions = pgs_env / "sessions"
    imp = pgs("import", bad)
    err = one_line_error(imp)
    assert f"modified after export: event {first} ('decision')" in err, err
    assert tree(sessions) == []  # nothing was imported
    rep = pgs("replay", bad, env={"PYTHONPATH": subprocess_pythonpath(fake_provider=False)})
    assert f"event {first} ('decision')" in one_line_error(rep) and "identical" not in rep.stdout


def test_tampered_bundle_without_hashes_replays_different_naming_the_first_event(pgs_env, exported):
    b = tamper_decision_prompts(exported)
    b.pop("hashes", None)  # as a bundle of the earlier version, or a tamperer who strips them
    rep = pgs("replay", write(pgs_env / "stripped.json", b), env={"PYTHONPATH": subprocess_pythonpath(fake_provider=False)})
    assert rep.returncode == 1, rep.stdout + rep.stderr
    assert "DIFFERENT" in rep.stdout and "identical" not in rep.stdout
    first = idx(exported, "decision")
    line = next(x for x in rep.stdout.splitlines() if "first difference" in x)
    assert f"event {first} ('decision') differs at prompt" in line and "Always answer yes." in line, line


def _set_gradient(b):
    b["events"][idx(b, "proposal") - 1]["proposal"]["gradients"][0]["text"] = "Ignore the abstract."


def _set_candidate(b):
    b["events"][idx(b, "proposal") - 1]["proposal"]["candidates"][0]["prompt"] = "Answer no."


def _set_row_output(b):
    b["events"][idx(b, "baseline") - 1]["report"]["rows"][0]["raw_output"] = "Answer: maybe"


def _set_score(b):
    g = b["events"][idx(b, "validation") - 1]["gate"]
    g["new_accuracy"] = 1.0 if g["new_accuracy"] != 1.0 else 0.0


def _flip_correct(b):
    row = b["events"][idx(b, "validation") - 1]["candidate_report"]["rows"][0]
    row["correct"] = not row["correct"]


@pytest.mark.parametrize("tamper,kind,field", [
    (_set_gradient, "proposal", "proposal.gradients[0].text"),
    (_set_candidate, "proposal", "proposal.candidates[0].prompt"),
    (_set_row_output, "baseline", "report.rows[0].raw_output"),
    (_set_score, "validation", "gate.new_accuracy"),
    (_flip_correct, "validation", "candidate_report.rows[0].correct"),
], ids=["gradient text", "candidate text", "model output", "gate score", "row correctness"])
def test_replay_compares_every_text_and_score(exported, tamper, kind, field):
    b = copy(exported)
    tamper(b)
    with pytest.raises(BundleError, match=rf"modified after export: event {idx(b, kind)} \('{kind}'\)"):
        import_bundle(json.dumps(b).encode(), root=Path("/nonexistent/never-written"))
    b.pop("hashes", None)
    r = replay_bundle(json.dumps(b).encode())
    assert not r.matches
    assert r.first_difference.startswith(f"event {idx(b, kind)} ('{kind}') differs at {field}"), r.first_difference


def test_removed_event_and_changed_response_are_named(exported):
    b = copy(exported)
    gone = idx(b, "gate")
    del b["events"][gone - 1]
    with pytest.raises(BundleError, match=rf"event {gone} \('{b['events'][gone - 1]['type']}'\) is not the event"):
        import_bundle(json.dumps(b).encode(), root=Path("/nonexistent/never-written"))
    b = copy(exported)
    key = next(iter(b["responses"]))
    b["responses"][key]["text"] = "Answer: no"
    with pytest.raises(BundleError, match="recorded model responses were changed"):
        import_bundle(json.dumps(b).encode(), root=Path("/nonexistent/never-written"))


def test_untampered_export_has_a_hash_per_event_and_replays_identical(exported):
    assert len(exported["hashes"]["events"]) == len(exported["events"])
    r = replay_bundle(json.dumps(exported).encode())
    assert r.matches and r.first_difference is None and r.misses == 0 and len(r.steps) == 2


def test_fixture_bundle_of_the_earlier_version_still_imports_and_replays_identical(pgs_env):
    assert "hashes" not in json.loads(FIXTURE.read_bytes())
    rep = pgs("replay", str(FIXTURE), env={"PYTHONPATH": subprocess_pythonpath(fake_provider=False)})
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert "identical; responses missing from the bundle: 0" in rep.stdout
    imp = pgs("import", str(FIXTURE))
    assert imp.returncode == 0, imp.stderr
    sid = imp.stdout.strip()
    assert (pgs_env / "sessions" / sid / "events.jsonl").is_file()
    md = pgs("export", sid, "--format", "markdown")
    assert md.returncode == 0 and "## Prompt versions" in md.stdout


# ---------------------------------------------------------------- field types, depth, nothing written


def _first(b, kind):
    return b["events"][idx(b, kind) - 1]


def _json(mutate):
    def f(b):
        b = copy(b)
        b.pop("hashes", None)  # so the type check, not the hash, is what refuses it
        mutate(b)
        return json.dumps(b).encode()
    return f


BAD_FIELDS = [
    ("input_tokens text", _json(lambda b: _first(b, "baseline")["report"]["rows"][0].update(input_tokens="abc")),
     r"Event \d+ \('baseline'\) of the bundle is malformed: report\.rows\[0\]\.input_tokens must be a whole number"),
    ("response input_tokens text", _json(lambda b: next(iter(b["responses"].values())).update(input_tokens="abc")),
     r"malformed response entry \(input_tokens must be a whole number"),
    ("Infinity", lambda b: _json(lambda x: None)(b).replace(b'"alpha": 0.05', b'"alpha": Infinity', 1),
     r"Infinity, which is not a number"),
    ("NaN", lambda b: _json(lambda x: None)(b).replace(b'"alpha": 0.05', b'"alpha": NaN', 1), r"NaN"),
    ("overflowing number", lambda b: _json(lambda x: None)(b).replace(b'"alpha": 0.05', b'"alpha": 1e999', 1),
     r"too large to be finite"),
    ("negative spend", _json(lambda b: _first(b, "forward")["spend"].update(cost_usd=-5.0)),
     r"spend\.cost_usd must be a finite number >= 0"),
    ("negative tokens", _json(lambda b: _first(b, "forward")["spend"].update(input_tokens=-100)),
     r"spend\.input_tokens must be a whole number >= 0"),
    ("gate.accepted text", _json(lambda b: _first(b, "gate").update(accepted="no")),
     r"\('gate'\) of the bundle is malformed: accepted must be true or false, not text"),
    ("boolean as a count", _json(lambda b: _first(b, "step_started").update(step=True)),
     r"step must be a whole number >= 0, not a boolean"),
    ("score out of range", _json(lambda b: _first(b, "validation")["gate"].update(p_value=7)),
     r"gate\.p_value must be a number between 0 and 1"),
    ("prompt not text", _json(lambda b: _first(b, "decision").update(prompt=5)), r"prompt must be text"),
    ("setting of the wrong type", _json(lambda b: b["events"][0]["config"].update(patience="3")),
     r"settings are invalid: patience must be a whole number"),
    ("engine setting of the wrong type", _json(lambda b: b["events"][0]["config"].update(params={"batch_size": "x"})),
     r"settings are invalid: params\.batch_size must be a whole number"),
]


@pytest.mark.parametrize("name,make,match", BAD_FIELDS, ids=[c[0] for c in BAD_FIELDS])
def test_bad_field_types_are_refused_with_one_line_and_write_nothing(tmp_path, exported, name, make, match):
    root, cache = tmp_path / "sessions", ResponseCache(tmp_path / "cache")
    with pytest.raises(BundleError) as e:
        import_bundle(make(exported), root=root, cache=cache)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400 and re.search(match, msg), msg
    assert tree(root) == [] and len(cache) == 0


def test_bad_field_type_through_the_cli(pgs_env, exported):
    data = _json(lambda b: _first(b, "gate").update(accepted="no"))(exported)
    for cmd in ("import", "replay"):
        err = one_line_error(pgs(cmd, write(pgs_env / "b.json", data)))
        assert "accepted must be true or false" in err
    assert tree(pgs_env / "sessions") == []


def test_deep_json_is_refused_with_one_line(pgs_env):
    deep = b'{"format": "prompt-gradient-studio/bundle", "version": 1, "events": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    with pytest.raises(BundleError, match="nested deeper than"):
        import_bundle(deep, root=pgs_env / "sessions")
    err = one_line_error(pgs("import", write(pgs_env / "deep.json", deep)))
    assert "nested deeper than" in err
    mild = b'{"format": "prompt-gradient-studio/bundle", "version": 1, "x": ' + b"[" * 100 + b"]" * 100 + b"}"
    with pytest.raises(BundleError, match="nested deeper than 64 levels"):
        import_bundle(mild, root=pgs_env / "sessions")
    assert tree(pgs_env / "sessions") == []


def test_failing_import_leaves_the_sessions_folder_and_cache_unchanged(pgs_env, exported):
    ok = pgs("import", write(pgs_env / "good.json", exported))
    assert ok.returncode == 0, ok.stderr
    before = tree(pgs_env / "sessions")
    n_cached = len(ResponseCache(pgs_env / "cache"))
    bad_response = _json(lambda b: next(iter(b["responses"].values())).update(output_tokens="lots"))(exported)
    gate_without_validation = _json(lambda b: b.update(events=[e for e in b["events"] if e["type"] != "validation"]))
    for data in (bad_response, gate_without_validation(exported),
                 json.dumps(tamper_decision_prompts(exported)).encode()):
        out = pgs("import", write(pgs_env / "bad.json", data))
        one_line_error(out)
        assert tree(pgs_env / "sessions") == before  # no half-made session, no temporary folder
    assert len(ResponseCache(pgs_env / "cache")) == n_cached


def test_repointed_events_are_accepted_when_well_formed(tmp_path, exported):
    b = copy(exported)
    b.pop("hashes", None)
    b["events"].append({"type": "repointed", "forward": "fake:f", "backward": "fake:b",
                        "forward_base_url": "http://127.0.0.1:9/v1", "backward_base_url": None})
    assert import_bundle(json.dumps(b).encode(), root=tmp_path / "ok")
    b["events"][-1]["forward_base_url"] = 9
    with pytest.raises(BundleError, match=r"\('repointed'\) of the bundle is malformed: forward_base_url"):
        import_bundle(json.dumps(b).encode(), root=tmp_path / "bad")


def test_export_of_an_imported_session_with_odd_field_types_does_not_crash(pgs_env, exported):
    """A session imported by an earlier version may hold odd values on disk: both exports still work."""
    sid = pgs("import", write(pgs_env / "good.json", exported)).stdout.strip()
    path = pgs_env / "sessions" / sid / "events.jsonl"
    events = [json.loads(x) for x in path.read_text().splitlines()]
    for e in events:
        if e["type"] == "validation":
            e["gate"].update(new_accuracy="high", p_value=None, new_ci=["a", "b"])
        if e["type"] == "baseline":
            e["spend"]["input_tokens"] = 1.5
            e["keys"] = 7
            e["report"]["rows"][0]["correct"] = "yes"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    md = pgs("export", sid, "--format", "markdown")
    assert md.returncode == 0 and "Traceback" not in md.stderr, md.stderr
    assert "| high |" in md.stdout
    out = pgs("export", sid, "-o", str(pgs_env / "again.json"))
    assert out.returncode == 0, out.stderr
    # and the odd bundle it makes is refused on import with one line, not imported
    err = one_line_error(pgs("import", str(pgs_env / "again.json"), "--sessions-dir", str(pgs_env / "other")))
    assert "('baseline') of the bundle is malformed: report.rows[0].correct must be true or false" in err
    assert tree(pgs_env / "other") == []


# ---------------------------------------------------------------- the Markdown report


def outside_fences(md: str) -> tuple[str, list[str]]:
    """The Markdown outside fenced code blocks (CommonMark rules for backtick fences), and the blocks' bodies."""
    outside, blocks, fence, body = [], [], None, []
    for line in md.split("\n"):
        if fence is None:
            m = re.match(r"^ {0,3}(`{3,})[^`]*$", line)
            if m:
                fence, body = m.group(1), []
            else:
                outside.append(line)
        elif re.fullmatch(r" {0,3}" + fence + r"`* *", line):
            blocks.append("\n".join(body))
            fence = None
        else:
            body.append(line)
    assert fence is None, "an unclosed fence swallows the rest of the report"
    return "\n".join(outside), blocks


class HostileModel(FakeModel):
    """Feedback with raw HTML and a run of backticks longer than a plain fence."""

    def reply(self, req):
        if req.tag == "textgrad.gradient":
            return f"<FEEDBACK>{IMG} Close the fence:\n````\n{SCRIPT}</FEEDBACK>"
        return super().reply(req)


def test_report_escapes_or_fences_every_text(tmp_path):
    seed = f"Answer carefully. {SCRIPT}\n```\n{IMG}\n```\nWeigh the evidence."
    cache = ResponseCache(tmp_path / "cache")
    s = _session(tmp_path / "sessions", cache, bwd=HostileModel(spec=ModelSpec("fake", "b")),
                 seed_prompt=seed, title=f"Trial {SCRIPT} [click](javascript:alert(3)) | x")
    s.run_auto(1)
    s.stop(f"because {IMG}")
    b = json.loads(bundle_bytes(s, cache))
    s.close()
    b.pop("hashes", None)
    b["events"][0]["config"]["forward"] = "openai:`x` <img src=y onerror=alert(4)>"  # a spec from a bundle
    sid = import_bundle(json.dumps(b).encode(), root=tmp_path / "imported")
    md = markdown_report(Session.open(sid, root=tmp_path / "imported", readonly=True))
    text, blocks = outside_fences(md)
    assert not re.search(r"<\s*(script|img)", text, re.I), text
    assert not re.search(r"(?<!\\)\]\(javascript", text) and "&lt;script&gt;" in text and "&lt;img" in text
    assert seed in blocks  # the prompt byte for byte, in a fence longer than its own backtick runs
    assert any(IMG in blk and "````" in blk and SCRIPT in blk for blk in blocks)  # the model's feedback
    accepted = [v for v in Session.open(sid, root=tmp_path / "imported", readonly=True).versions[1:]]
    assert accepted and all(v.prompt in blocks for v in accepted)  # the model-written prompt


def test_report_diff_of_a_single_line_prompt_has_one_line_per_change(tmp_path):
    cache = ResponseCache(tmp_path / "cache")
    s = _session(tmp_path / "sessions", cache, seed_prompt="Answer the question.")
    s.run_baseline()
    s.start_step()
    s.decide("edit", prompt="Answer the question using the evidence.")
    s.validate()
    s.confirm()
    md = markdown_report(s)
    s.close()
    lines = md.split("\n")
    assert "-Answer the question." in lines and "+Answer the question using the evidence." in lines
    assert unified("old", "new").splitlines()[-2:] == ["-old", "+new"]
