"""The person's verbs (issue 12 item 8) through `pgs` subprocesses with the fake provider: new, step --pause,
continue, feedback, gradient, decide, validate, confirm, then export and an offline replay that is identical."""

from __future__ import annotations

import json

from tests.test_cli import last_json, pgs


def new_session(method: str = "textgrad") -> str:
    out = pgs("new", "--task", "pubmedqa", "--method", method, "--forward", "fake:fwd", "--backward", "fake:bwd",
              "--preset", "quick", "--val-limit", "10", "--policy", "strict", "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    d = last_json(out.stdout)
    assert d["state"] == "ready" and d["n"] == 10 and d["calls"] == 10 and 0 <= d["baseline_val"] <= 1
    return d["session"]


def test_a_whole_guided_step_through_the_verbs_replays_identical(pgs_env):
    sid = new_session()
    out = pgs("step", sid, "--pause", "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    d = last_json(out.stdout)
    assert d["state"] == "answered" and d["gradients"] == [] and d["candidates"] == []
    assert len(d["minibatch"]) == 3 and set(d["minibatch"][0]) >= {"id", "gold", "answer", "correct"}
    assert [json.loads(line)["type"] for line in (pgs_env / "sessions" / sid / "events.jsonl").read_text().splitlines()
            ][-1] == "paused"
    qid = d["minibatch"][0]["id"]
    fb = pgs("feedback", sid, qid, "--text", "The answer ignored the stated p-value.", "--json")
    assert fb.returncode == 0, fb.stderr
    assert last_json(fb.stdout)["feedback"] == "The answer ignored the stated p-value."

    d = last_json(pgs("continue", sid, "--json", "--quiet").stdout)
    assert d["state"] == "proposed" and d["gradients"][0]["origin"] == "model"
    assert next(r for r in d["minibatch"] if r["id"] == qid)["feedback"] == "The answer ignored the stated p-value."
    model_ids = {c["id"] for c in d["candidates"]}
    assert model_ids and {c["origin"] for c in d["candidates"]} == {"update"}

    out = pgs("gradient", sid, "--text", "Quote the p-value, then answer.", "--replace", d["gradients"][0]["id"],
              "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    g = last_json(out.stdout)
    assert g["candidates"] and {c["origin"] for c in g["candidates"]} == {"person"}
    assert all("Quote the p-value" in c["prompt"] for c in g["candidates"]) and g["replaces"] == d["gradients"][0]["id"]
    again = last_json(pgs("step", sid, "--json", "--quiet").stdout)  # the open step, with the person's beside
    assert [c["id"] for c in again["candidates"]] == [c["id"] for c in d["candidates"] + g["candidates"]]
    assert again["gradients"][-1] == {**again["gradients"][-1], "origin": "person", "replaces": d["gradients"][0]["id"]}

    pick = g["candidates"][0]
    dec = last_json(pgs("decide", sid, "accept", pick["id"], "--json").stdout)
    assert dec["prompt"] == pick["prompt"] and dec["state"] == "decided"
    val = pgs("validate", sid, "--json", "--quiet")
    assert val.returncode == 0, val.stderr
    assert last_json(val.stdout)["verdict"] in ("accept", "reject")
    conf = last_json(pgs("confirm", sid, "--accept", "--json").stdout)
    assert conf["outcome"] == "accepted" and conf["version"] == 1 and conf["current_prompt"] == pick["prompt"]

    step2 = last_json(pgs("step", sid, "--json", "--quiet").stdout)
    assert step2["step"] == 2 and step2["state"] == "proposed"
    assert pgs("decide", sid, "skip").returncode == 0

    bundle = pgs_env / "b.json"
    assert pgs("export", sid, "-o", str(bundle)).returncode == 0
    rep = pgs("replay", str(bundle))
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert "identical; responses missing from the bundle: 0" in rep.stdout


def test_protegi_person_gradient_verb_and_edit_decision(pgs_env):
    sid = new_session("protegi")
    d = last_json(pgs("step", sid, "--json", "--quiet").stdout)
    assert d["state"] == "proposed" and d["gradients"]
    g = last_json(pgs("gradient", sid, "--text", "It never asks for the p-value.", "--json", "--quiet").stdout)
    assert g["candidates"] and {c["origin"] for c in g["candidates"]} == {"person"}
    assert all(c["score"] is not None for c in g["candidates"])  # screened by the bandit, as the preset says
    prompt_file = pgs_env / "p.txt"
    prompt_file.write_text("Answer yes, no or maybe. Quote the p-value.\n", encoding="utf-8")
    dec = last_json(pgs("decide", sid, "edit", "--prompt-file", str(prompt_file), "--json").stdout)
    assert dec["action"] == "edit" and dec["prompt"] == "Answer yes, no or maybe. Quote the p-value."
    conf = pgs("confirm", sid, "--reject")
    assert conf.returncode == 2 and conf.stderr.strip() == "pgs: error: Validate the chosen prompt first."


def test_the_verbs_refuse_mistakes_in_one_line(pgs_env):
    sid = new_session()
    cases = [
        (("continue", sid, "--quiet"), "pgs: error: Cannot continue: no step is open."),
        (("feedback", sid, "q1", "--text", "x"), "pgs: error: Cannot give feedback: no step is open."),
        (("decide", sid, "accept"), "pgs: error: pgs decide ID accept needs the CANDIDATE_ID (see pgs step ID)."),
        (("gradient", "no-such", "--text", "x", "--quiet"), "pgs: error: No session 'no-such' in"),
    ]
    for args, line in cases:
        out = pgs(*args)
        assert out.returncode == 2 and out.stderr.startswith(line) and "Traceback" not in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1
    pgs("step", sid, "--pause", "--quiet")
    out = pgs("feedback", sid, "not-in-the-minibatch", "--text", "x")
    assert out.returncode == 2 and "is not in step 1's minibatch" in out.stderr
    out = pgs("gradient", sid, "--text", "x", "--replace", "s1.g9", "--quiet")
    assert out.returncode == 2 and "No gradient 's1.g9' in step 1." in out.stderr
