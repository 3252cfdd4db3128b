"""`pgs new | step | continue | feedback | gradient | decide | validate | confirm`: one session driven action by
action, as a person does in the app (issue 12). `pgs optimize` is the automatic loop over the same session API.
With --json the last stdout line is one JSON object."""

from __future__ import annotations

import argparse
import json
import sys

from ..session import Session, Step
from .common import (ConfigError, add_model_args, add_session_output_args, phase_bars, read_prompt, session_models,
                     sessions_root)
from .sessions import add_config_args, config_from_args, repoint

ANSWER_CHARS = 300  # of a model's raw answer, in the printed minibatch


def plain(text: object, limit: int = 0) -> str:
    """Model or dataset text fit for one terminal line: control characters as '?', optionally cut."""
    out = " ".join("".join(ch if ch.isprintable() else "?" for ch in part) for part in str(text).split())
    return out if not limit or len(out) <= limit else out[: limit - 1] + "…"


def step_json(s: Session, st: Step) -> dict:
    """A step as the verbs print it: its minibatch answers (of the current prompt), gradients and candidates."""
    rows = st.forward[0].rows if st.forward else []
    prop = st.proposal
    return {
        "session": s.id, "step": st.index, "attempt": st.attempt, "state": st.status,
        "minibatch": [{"id": r.id, "gold": r.gold, "answer": r.parsed, "correct": r.correct,
                       "output": r.raw_output[:ANSWER_CHARS], "error": r.error,
                       "feedback": st.feedback.get(r.id)} for r in rows],
        "gradients": [{"id": g.id, "origin": "person" if g.id in st.person_gradients else "model",
                       "replaces": st.person_gradients.get(g.id), "text": g.text, "failure_ids": g.failure_ids}
                      for g in (prop.gradients if prop else [])],
        "candidates": [candidate_json(c) for c in (prop.candidates if prop else [])],
        "note": prop.note if prop else None,
    }


def candidate_json(c) -> dict:
    return {"id": c.id, "origin": c.origin, "prompt": c.prompt, "gradient_id": c.gradient_id,
            "score": c.score, "flags": list(c.flags)}


def print_step(s: Session, st: Step, a: argparse.Namespace) -> None:
    d = step_json(s, st)
    if not a.json:
        print(f"session {s.id}, step {st.index} (attempt {st.attempt}): {st.status}")
        for r in d["minibatch"]:
            mark = "right" if r["correct"] else "wrong"
            print(f"  {plain(r['id'])}: {mark:5s} gold {plain(r['gold'])}, answered {plain(r['answer'] or 'unparsed')}"
                  + (f"  [person: {plain(r['feedback'], 80)}]" if r["feedback"] else ""))
        for g in d["gradients"]:
            print(f"  gradient {plain(g['id'])} ({g['origin']}): {plain(g['text'], 160)}")
        for c in d["candidates"]:
            print(f"  candidate {plain(c['id'])} ({c['origin']}): {plain(c['prompt'], 160)}")
        if d["note"]:
            print(f"  note: {plain(d['note'])}")
        if st.status == "answered":
            print(f"  paused before any gradient: pgs feedback {s.id} QUESTION --text T, then pgs continue {s.id}")
    else:
        print(json.dumps(d, ensure_ascii=False))


def open_live(a: argparse.Namespace) -> Session:
    """The session for writing, with models on this command's runner (an imported one must be re-pointed)."""
    s = Session.open(a.id, root=sessions_root(a))
    for w in s.warnings:
        print(f"warning: {w}", file=sys.stderr)
    try:
        repoint(s, a)
        s.models = session_models(s.config, a)
    except BaseException:
        s.close()
        raise
    return s


def open_plain(a: argparse.Namespace) -> Session:
    """The session for writing, without models (decisions and feedback make no calls)."""
    return Session.open(a.id, root=sessions_root(a))


# ---------------------------------------------------------------- the verbs


def cmd_new(a: argparse.Namespace) -> int:
    cfg, data = config_from_args(a)
    models = session_models(cfg, a)
    with Session.create(cfg, root=sessions_root(a), models=models, data=data) as s:
        print(f"session {s.id}", file=sys.stderr if a.json else sys.stdout, flush=True)
        v0 = s.run_baseline(progress=phase_bars(a.quiet))
        out = {"session": s.id, "state": s.state, "baseline_val": v0.accuracy, "n": v0.report.n,
               "prompt": v0.prompt, "calls": s.spend.calls, "cost_usd": round(s.spend.cost_usd, 6)}
    if a.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(f"baseline: val {v0.accuracy:.3f} on {v0.report.n} questions; next: pgs step {out['session']}")
    return 0


def cmd_step(a: argparse.Namespace) -> int:
    with open_live(a) as s:
        st = s.start_step(pause_after_forward=a.pause, regenerate=a.regenerate, progress=phase_bars(a.quiet))
        print_step(s, st, a)
    return 0


def cmd_continue(a: argparse.Namespace) -> int:
    with open_live(a) as s:
        st = s.continue_step(progress=phase_bars(a.quiet))
        print_step(s, st, a)
    return 0


def cmd_feedback(a: argparse.Namespace) -> int:
    with open_plain(a) as s:
        st = s.add_feedback(a.question, a.text)
        text = st.feedback.get(a.question)
        out = {"session": s.id, "step": st.index, "question": a.question, "feedback": text, "origin": "person"}
    if a.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(f"step {st.index}, question {plain(a.question)}: " + (f"your feedback recorded: {plain(text, 160)}"
                                                                    if text else "your feedback withdrawn"))
    return 0


def cmd_gradient(a: argparse.Namespace) -> int:
    with open_live(a) as s:
        new = s.apply_gradient(a.text, replace=a.replace, progress=phase_bars(a.quiet))
        st = s.step
        g = next(gid for gid, _ in reversed(list(st.person_gradients.items())))
        out = {"session": s.id, "step": st.index, "gradient": g, "replaces": a.replace,
               "candidates": [candidate_json(c) for c in new], "note": s.events[-1]["proposal"].get("note")}
    if a.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(f"step {out['step']}: your gradient {g}: {len(new)} new candidate(s)")
        for c in new:
            print(f"  candidate {plain(c.id)} (person): {plain(c.prompt, 160)}")
        if not new and out["note"]:
            print(f"  note: {plain(out['note'])}")
    return 0


def cmd_decide(a: argparse.Namespace) -> int:
    prompt = None
    if a.action == "accept" and not a.candidate:
        raise ConfigError("pgs decide ID accept needs the CANDIDATE_ID (see pgs step ID).")
    if a.action != "accept" and a.candidate:
        raise ConfigError(f"pgs decide ID {a.action} takes no candidate id.")
    if a.action == "edit":
        if not (a.prompt_file or a.prompt):
            raise ConfigError("pgs decide ID edit needs --prompt-file FILE (or --prompt TEXT).")
        prompt = read_prompt(a)
    with open_plain(a) as s:
        st = s.decide(a.action, candidate=a.candidate, prompt=prompt)
        out = {"session": s.id, "step": st.index, "action": a.action, "candidate": a.candidate,
               "prompt": (st.decision or {}).get("prompt"), "state": s.state}
    if a.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        nxt = f"pgs validate {out['session']}" if out["state"] == "decided" else f"pgs step {out['session']}"
        print(f"step {out['step']}: {a.action} recorded ({out['state']}); next: {nxt}")
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
    with open_live(a) as s:
        g = s.validate(progress=phase_bars(a.quiet))
        st = s.step
        out = {"session": s.id, "step": st.index, "state": s.state, "passed": g.passed,
               "verdict": "accept" if g.passed and not s.heldout_leaks(st.decision["prompt"]) else "reject",
               "gate": g.to_json()}
    if a.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(f"step {out['step']}: val {g.new_accuracy:.3f} (current {g.old_accuracy:.3f}, p={g.p_value:.3g}) on "
              f"{g.n} questions: the gate says {out['verdict']}; "
              f"next: pgs confirm {out['session']} [--accept|--reject]")
    return 0


def cmd_confirm(a: argparse.Namespace) -> int:
    with open_plain(a) as s:
        st = s.confirm(True if a.accept else False if a.reject else None)
        out = {"session": s.id, "step": st.index, "outcome": st.outcome, "version": len(s.versions) - 1,
               "current_prompt": s.current.prompt, "accuracy": s.current.accuracy}
    if a.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(f"step {out['step']}: {out['outcome']}; current version {out['version']} (val {out['accuracy']:.3f})")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    n = sub.add_parser("new", help="create a session and score its seed prompt (then: pgs step ID)")
    add_config_args(n)
    n.set_defaults(fn=cmd_new)

    def live(name: str, help_text: str):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("id")
        add_model_args(p)
        p.add_argument("--forward-base-url", help="re-point the forward model ('default': the provider's endpoint)")
        p.add_argument("--backward-base-url", help="re-point the backward model ('default': the provider's endpoint)")
        add_session_output_args(p)
        return p

    p = live("step", "start a step: answer the minibatch and (unless --pause) propose gradients and candidates")
    p.add_argument("--pause", action="store_true", help="stop after the answers, before any gradient is paid for")
    p.add_argument("--regenerate", action="store_true", help="a new attempt (a new minibatch) of the open step")
    p.set_defaults(fn=cmd_step)
    live("continue", "write the gradients of a step paused after its answers").set_defaults(fn=cmd_continue)

    f = sub.add_parser("feedback", help="your feedback on one minibatch answer (used as its loss)")
    f.add_argument("id")
    f.add_argument("question")
    f.add_argument("--text", required=True, help="the feedback ('' withdraws it)")
    add_session_output_args(f)
    f.set_defaults(fn=cmd_feedback)

    g = live("gradient", "apply your own gradient (or an edit of one): new candidates of origin 'person'")
    g.add_argument("--text", required=True, help="what is wrong with the prompt, in your words")
    g.add_argument("--replace", metavar="GRADIENT_ID", help="the gradient this one edits")
    g.set_defaults(fn=cmd_gradient)

    d = sub.add_parser("decide", help="accept CANDIDATE_ID | edit --prompt-file F | reject | skip")
    d.add_argument("id")
    d.add_argument("action", choices=("accept", "edit", "reject", "skip"))
    d.add_argument("candidate", nargs="?")
    d.add_argument("--prompt-file")
    d.add_argument("--prompt", default=None)
    add_session_output_args(d)
    d.set_defaults(fn=cmd_decide)

    live("validate", "score the chosen prompt against the current one; compute the gate").set_defaults(
        fn=cmd_validate)

    c = sub.add_parser("confirm", help="record the gate: its verdict, or your --accept / --reject")
    c.add_argument("id")
    which = c.add_mutually_exclusive_group()
    which.add_argument("--accept", action="store_true")
    which.add_argument("--reject", action="store_true")
    add_session_output_args(c)
    c.set_defaults(fn=cmd_confirm)
