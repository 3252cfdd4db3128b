"""Rendering one step: minibatch results, gradients, candidates, the gate (Optimize and History)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import person_marks as marks
from core.evaluate import EvalReport
from core.gate import POLICY_HELP
from core.lineage import Candidate, Gradient, Proposal, call_name, verdicts
from core.llm import for_surface
from core.session import Session, Step

from . import person_marks, state
from .explain import explain
from .render import badge_row, call_record, ci, diff, md_code, md_escape, pct, plain

FILTERS = ("all", "failures", "unparsed")


def report_frame(s: Session, rep: EvalReport, *, raw: bool = False) -> pd.DataFrame:
    """question, gold, model answer, status (and the raw output on demand); text stays text."""
    rows = []
    for r in rep.rows:
        row = {"id": r.id, "question": state.question_text(s, r.id) or r.input, "gold": r.gold,
               "answer": r.parsed if r.parsed is not None else "(unparsed)", "status": r.status}
        if raw:
            row["raw output"] = r.error or r.raw_output
        rows.append(row)
    return pd.DataFrame(rows, columns=["id", "question", "gold", "answer", "status"] + (["raw output"] if raw else []))


def minibatch(s: Session, st_: Step, *, key: str, dispute: bool = False) -> None:
    if not st_.forward:
        st.caption("No minibatch answers recorded for this step yet.")
        return
    idx = 0
    if len(st_.forward) > 1:
        idx = st.selectbox("Beam prompt", range(len(st_.forward)), key=f"beam_{key}",
                           format_func=lambda i: "current prompt" if i == 0 else f"beam prompt {i + 1}")
    rep = st_.forward[idx]
    explain("minibatch")
    n_fail = sum(1 for r in rep.rows if not r.correct)
    c = st.columns([2, 2, 3])
    c[0].metric("Minibatch accuracy", pct(rep.accuracy),
                help=f"{rep.n} training questions: {rep.counts_line()} (failed calls are not counted as wrong)")
    c[1].metric("Failures", len(rep.failures),
                help=f"wrong or unparsed answers ({rep.unparsed} unparsed); {rep.errors} failed calls are shown "
                     "as errors, not counted as wrong")
    with c[2]:
        flt = st.segmented_control("Show", FILTERS, default="failures" if n_fail else "all", key=f"filter_{key}")
        raw = st.toggle("Raw model output", key=f"raw_{key}")
    df = report_frame(s, rep, raw=raw)
    if st_.feedback:  # the person's feedback, beside the answer it is about
        df.insert(4, "your feedback (person)", [st_.feedback.get(i, "") for i in df["id"]])
    if flt == "failures":
        df = df[df["status"] != "correct"]
    elif flt == "unparsed":
        df = df[df["status"] == "unparsed"]
    if df.empty:
        st.caption("No questions match this filter.")
    else:
        st.dataframe(df, hide_index=True, key=f"mb_{key}",
                     column_config={"question": st.column_config.TextColumn(width="large"),
                                    "raw output": st.column_config.TextColumn(width="large")})
        read_in_full(s, rep, list(df["id"]), key=key, dispute=dispute)


def read_in_full(s: Session, rep: EvalReport, ids: list[str], *, key: str, dispute: bool = False) -> None:
    """One question with the model's whole answer, as text (tables cut long cells); `dispute`: with a
    "Dispute label" control."""
    rows = {r.id: r for r in rep.rows}
    with st.expander("Read a question and the model's answer in full"):
        qid = st.selectbox("Question", ids, key=f"full_{key}",
                           format_func=lambda i: f"{i} · gold {rows[i].gold} · answer "
                                                 f"{rows[i].parsed if rows[i].parsed is not None else '(unparsed)'}")
        r = rows.get(qid)
        if r is None:
            return
        if dispute:
            person_marks.dispute_popover(s, r.id, key=f"{key}_{r.id}")
        st.caption("Question, as the model saw it")
        plain(state.question_text(s, r.id) or r.input, box=True)
        st.caption("Raw model output" + (" (the call failed)" if r.error else ""))
        plain(r.error or r.raw_output, box=True)


def failures_table(s: Session, ids: list[str], rep: EvalReport | None) -> None:
    rows = {r.id: r for r in rep.rows} if rep else {}
    data = []
    for i in ids:
        r = rows.get(i)
        data.append({"id": i, "question": state.question_text(s, i), "gold": r.gold if r else "",
                     "answer": (r.parsed or "(unparsed)") if r else ""})
    st.dataframe(pd.DataFrame(data, columns=["id", "question", "gold", "answer"]), hide_index=True)


def gradient_card(s: Session, st_: Step, g: Gradient, n: int) -> None:
    with st.container(border=True):
        person = g.id in st_.person_gradients
        badge_row([(f"gradient {n}", "violet")] + ([("person", "green")] if person else []) +
                  ([("parsed by fallback: no tags", "orange")] if g.flagged else []))
        if person:
            base = st_.person_gradients[g.id]
            st.caption("Written by you" + (f", editing {md_escape(item_names(st_.proposal).get(base, base))}"
                                           if base else ""))
        plain(g.text, box=True)
        rep = st_.forward[0] if st_.forward else None
        with st.expander(f"From {len(g.failure_ids)} question(s) it got wrong"):
            failures_table(s, g.failure_ids, rep)
        if g.feedback:
            with st.expander(f"Per-question feedback (the loss, {len(g.feedback)})"):
                for qid, fb in g.feedback.items():
                    st.markdown(f"**{md_escape(qid)}**" + (" :green-badge[person]" if qid in st_.feedback else ""))
                    plain(fb)
        call_record(g.call)


def candidate_card(s: Session, cand: Candidate, k: int, current: str, *, actions: bool, key: str,
                   names: dict[str, str] | None = None) -> None:
    with st.container(border=True):
        badges = [(f"candidate {k}", "blue"), (cand.origin, "gray")]
        if cand.flagged:
            badges.append(("parsed by fallback", "orange"))
        broken = marks.broken_locks(cand.prompt, s.active_locks()) if actions else []  # locks made since, too
        flags = cand.flags + [marks.lock_flag(x) for x in broken if marks.lock_flag(x) not in cand.flags]
        lock_flags = [f for f in flags if f.startswith("changes locked sentence")]
        # "cut off", "breaks constraint", "leaks ... data"; one badge for any number of changed locked sentences
        badges += [(f.split(":")[0], "red") for f in flags if f not in lock_flags]
        badges += [("changes locked sentence", "red")] if lock_flags else []
        badge_row(badges)
        details = [f for f in flags if ":" in f]
        if flags:
            st.caption("Flagged: the automatic policy will not take it" + (
                "; one with validation or test text fails the gate unless you override" if any(
                    x in cand.leaks for x in ("val", "test")) else "")
                + ("; one that changes a locked sentence is taken only by override" if lock_flags else "") + ".")
        for f in details:
            st.text(f)  # constraint text comes from the session: shown as text
        if cand.score is not None:
            st.metric("Bandit score (train)", pct(cand.score), help=f"{cand.pulls} training samples pulled")
        st.caption("Word diff against the current prompt (red removed, green added)")
        diff(current, cand.prompt)
        with st.expander("Full text"):
            plain(cand.prompt, copy=True)
        names = names or {}
        if cand.gradient_id:
            st.caption(f"from {md_escape(names.get(cand.gradient_id, cand.gradient_id))}" +
                       (f", rephrasing {md_escape(names.get(cand.source_id, cand.source_id))}" if cand.source_id else ""))
        call_record(cand.call)
        if actions:
            b1, b2 = st.columns(2)
            if broken:  # taking it is an explicit override, recorded on the decision
                b1.button(f"Accept {k} anyway", key=f"accept_{key}_{cand.id}", width="stretch",
                          icon=":material/lock_open:",
                          on_click=_set, args=({"pending_action": ("accept_override", cand.id)},),
                          help="It changes a locked sentence: accept it by override (recorded) and validate it")
            else:
                b1.button(f"Accept {k}", key=f"accept_{key}_{cand.id}", type="primary", width="stretch",
                          on_click=_set, args=({"pending_action": ("accept", cand.id)},),
                          help="Accept this candidate and score it on the validation set")
            b2.button(f"Edit {k}", key=f"edit_{key}_{cand.id}", width="stretch",
                      on_click=_set, args=({"edit_source": cand.id, "edit_text": cand.prompt},),
                      help="Copy it into the editor below")


def _set(values: dict) -> None:
    for k, v in values.items():
        st.session_state[k] = v


def proposal_view(s: Session, st_: Step, *, actions: bool, key: str) -> None:
    prop: Proposal | None = st_.proposal
    if prop is None:
        return
    if prop.note:  # a failed call is an error with what to do about it, not an information
        failed = "failed" in prop.note or "timed out" in prop.note
        (st.error if failed else st.info)(md_escape(for_surface(prop.note, "app")),
                                          icon=":material/error:" if failed else ":material/info:")
    st.markdown(f"#### Gradients ({len(prop.gradients)})")
    explain("gradient")
    if not prop.gradients:
        st.caption("No gradients in this proposal.")
    per_row = 2 if len(prop.gradients) > 1 else 1
    for start in range(0, len(prop.gradients), per_row):
        cols = st.columns(per_row)
        for col, (n, g) in zip(cols, list(enumerate(prop.gradients, 1))[start:start + per_row]):
            with col:
                gradient_card(s, st_, g, n)
    if prop.calls:
        with st.expander(f"Other optimiser calls ({len(prop.calls)}: per-question feedback and failed calls)"):
            for rec in prop.calls:
                call_record(rec, title=call_name(rec.template) + (" — failed" if rec.error else ""))
    st.markdown(f"#### Candidates ({len(prop.candidates)})")
    explain("candidate")
    if prop.bandit:
        b = prop.bandit
        st.caption(f"Screened with {md_escape(b.get('algorithm'))}: {b.get('spent')} of {b.get('budget')} forward calls "
                   f"on training samples; ranked best first."
                   + (f" {b['failed']} failed call(s) were left out of the scores (not counted as wrong)."
                      if b.get("failed") else ""))
        explain("bandit")
    if not prop.candidates:
        st.caption("No candidates: edit the prompt by hand, regenerate, or skip.")
    current = s.versions[st_.parent_version].prompt if st_.parent_version < len(s.versions) else s.current.prompt
    names = item_names(prop)
    per_row = 3 if len(prop.candidates) >= 3 else max(1, len(prop.candidates))
    for start in range(0, len(prop.candidates), per_row):
        cols = st.columns(per_row)
        for col, (k, cand) in zip(cols, list(enumerate(prop.candidates, 1))[start:start + per_row]):
            with col:
                candidate_card(s, cand, k, current, actions=actions, key=key, names=names)


def item_names(prop: Proposal | None) -> dict[str, str]:
    """'gradient 2', 'candidate 3' for the internal ids, numbered as the cards show them."""
    if prop is None:
        return {}
    out = {g.id: f"gradient {n}" for n, g in enumerate(prop.gradients, 1)}
    out.update({c.id: f"candidate {k}" for k, c in enumerate(prop.candidates, 1)})
    return out


def decision_summary(s: Session, st_: Step) -> None:
    d = st_.decision or {}
    action = d.get("action")
    if action == "accept":
        name = item_names(st_.proposal).get(d.get("candidate"), "a candidate")
        st.markdown(f"**Decision:** accept {md_escape(name)} {md_code(d.get('candidate'))}")
    elif action == "edit":
        st.markdown("**Decision:** accept a hand edit")
    elif action:
        st.markdown(f"**Decision:** {md_escape(action)}")
    if d.get("prompt"):
        with st.expander("The chosen prompt (diff against the prompt it would replace)", expanded=True):
            diff(s.versions[st_.parent_version].prompt if st_.parent_version < len(s.versions) else "", d["prompt"])


def gate_view(s: Session, st_: Step, *, dispute: bool = False) -> None:
    g = st_.gate
    if g is None:
        return
    c = st.columns(4)
    c[0].metric("Current prompt", pct(g.old_accuracy), help=ci(g.old_ci) + f" · n={g.n}")
    c[1].metric("Chosen prompt", pct(g.new_accuracy), **points_delta(100 * (g.new_accuracy - g.old_accuracy)),
                help=ci(g.new_ci) + f" · n={g.n}")
    if g.policy == "adaptive":
        stat = ("e-value", f"{g.e_value:.3g}") if g.e_value is not None else ("Sequential p", f"{g.p_value:.3g}")
        c[2].metric(*stat, help=f"{g.test}; accept when p <= the alpha spent ({g.questions_used} questions, "
                                f"looks at {', '.join(map(str, g.looks))})")
    else:
        c[2].metric("McNemar p", f"{g.p_value:.3g}", help="exact paired test on the same validation questions")
    c[3].metric("Fixed / broke", f"{len(g.fixed)} / {len(g.broke)}")
    explain("gate")
    st.caption(f"{ci(g.old_ci)} → {ci(g.new_ci)} · policy **{md_escape(g.policy)}**: {md_escape(POLICY_HELP.get(g.policy, ''))}")
    explain("mcnemar")
    if g.policy == "adaptive":
        st.caption(f"Took **{g.questions_used}** validation questions in {len(g.looks)} look(s) "
                   f"({md_escape(', '.join(map(str, g.looks)))}) · test: {md_escape(g.test)}")
    leaks = s.heldout_leaks((st_.decision or {}).get("prompt") or "")
    passed = g.passed and not leaks
    verdict = f"Gate verdict: {'accept' if passed else 'reject'} — {md_escape(g.reason)}"
    if leaks:
        verdict += (" — but the prompt contains " + " and ".join({"val": "validation", "test": "test"}[x] for x in leaks)
                    + " question text, so it passes only if you override")
    (st.success if passed else st.warning)(verdict, icon=":material/check_circle:" if passed else ":material/warning:")
    person_marks.gate_exclusions(s, st_)
    if dispute and st_.candidate_report is not None:
        person_marks.question_dispute(s, [r.id for r in st_.candidate_report.rows], key=f"gate{st_.index}",
                                      enabled=True, what="validation")
    f1, f2 = st.columns(2)
    for col, ids, what in ((f1, g.fixed, "fixed (wrong before, right now)"), (f2, g.broke, "broke (right before, wrong now)")):
        with col:
            with st.expander(f"{len(ids)} question(s) {what}"):
                if ids:
                    failures_table(s, ids, st_.candidate_report)
                else:
                    st.caption("None.")


def points_delta(points: float, suffix: str = "pts") -> dict:
    """st.metric's delta arguments for a change in percentage points: no arrow and no colour when it rounds
    to zero (a green "+0.0 pts" reads as an improvement)."""
    if round(points, 1) == 0:
        return {"delta": f"±0.0 {suffix}", "delta_color": "off", "delta_arrow": "off"}
    return {"delta": f"{points:+.1f} {suffix}"}


def outcome_line(s: Session, st_: Step) -> None:
    """Who decided the step, in words: an override says so ("rejected by the gate, accepted by you")."""
    v = verdicts(s.events).get(st_.index)
    if v is None or not st_.outcome:
        return
    text = f"Outcome: {st_.outcome} — {v.text()}"
    if v.override:
        st.warning(md_escape(text), icon=":material/person:")
    else:
        st.caption(md_escape(text))


def step_record(s: Session, st_: Step, *, key: str) -> None:
    """The full record of a past step (History, replay): read-only."""
    badge_row([(f"step {st_.index}", "blue")] + ([(f"attempt {st_.attempt + 1}", "gray")] if st_.attempt else []) +
              [(st_.outcome or st_.status, "green" if st_.outcome == "accepted" else
                "red" if st_.outcome == "rejected" else "gray")] +
              ([(v.text(), "orange")] if (v := verdicts(s.events).get(st_.index)) and v.override else []))
    sp = st_.spend
    st.caption(f"{sp.calls} calls ({sp.cached} cached) · {sp.input_tokens + sp.output_tokens:,} tokens · "
               f"${sp.cost_usd:.4f}")
    t = st.tabs(["Minibatch", "Gradients & candidates", "Decision & gate"])
    with t[0]:
        minibatch(s, st_, key=key)
    with t[1]:
        proposal_view(s, st_, actions=False, key=key)
    with t[2]:
        decision_summary(s, st_)
        gate_view(s, st_)
        outcome_line(s, st_)
        if st_.gate is None and not st_.decision:
            st.caption("No decision recorded.")
