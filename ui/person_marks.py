"""The person's marks in the app: dispute a question's gold label (or exclude it), lock sentences of the current
prompt, and the tables and gate notes that show them. Every change happens in a callback."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import person_marks as marks
from core.blame import split_sentences
from core.session import Session, SessionError, Step

from .render import md_escape, pct, plain


def _flash(kind: str, message: str) -> None:
    st.session_state.setdefault("flash", []).append((kind, message))


def _dispute(s: Session, qid: str, key: str) -> None:
    reason = st.session_state.get(f"dispute_reason_{key}", "")
    exclude = st.session_state.get(f"dispute_ex_{key}", False)
    try:
        s.dispute(qid, reason, exclude=exclude)
    except SessionError as exc:
        _flash("error", md_escape(exc))
        return
    st.session_state[f"dispute_reason_{key}"] = ""
    _flash("info", f"Question {md_escape(qid)}: " + ("excluded from minibatches and gates from now on."
                                                     if exclude else "label marked as disputed."))


def dispute_popover(s: Session, qid: str, *, key: str, enabled: bool = True) -> None:
    """A small "Dispute label" popover for one question: a reason, and whether to exclude it from now on."""
    latest = {d.question: d for d in s.disputes}.get(qid)
    label = "Dispute label" if latest is None else ("Excluded" if latest.exclude else "Label disputed")
    with st.popover(label, icon=":material/flag:", disabled=not enabled):
        if latest is not None:
            st.caption(("Excluded" if latest.exclude else "Disputed") + f" from step {latest.step}: ")
            plain(latest.reason)
        st.text_input("Why is the gold label wrong?", key=f"dispute_reason_{key}",
                      placeholder="e.g. the abstract's conclusion says the opposite")
        st.checkbox("Exclude this question from minibatches and gates from now on", key=f"dispute_ex_{key}",
                    value=latest.exclude if latest else False,
                    help="earlier steps keep their scores; the data is not changed")
        st.button("Record", key=f"dispute_go_{key}", on_click=_dispute, args=(s, qid, key), type="primary")


def question_dispute(s: Session, ids: list[str], *, key: str, enabled: bool, what: str) -> None:
    """Pick one of `ids` and dispute its label (the gate's validation questions)."""
    if not ids:
        return
    c = st.columns([3, 1], vertical_alignment="bottom")
    qid = c[0].selectbox(f"Dispute the gold label of a {what} question", ids, key=f"dq_{key}")
    with c[1]:
        dispute_popover(s, qid, key=f"{key}_{qid}", enabled=enabled)


def disputes_frame(s: Session) -> pd.DataFrame:
    """Every dispute and exclusion, in the order recorded (a later one for a question replaces it)."""
    latest = {d.question: i for i, d in enumerate(s.disputes)}
    rows = [{"question": d.question, "what": "excluded" if d.exclude else "disputed (still asked)",
             "from step": d.step, "reason": d.reason, "in effect": latest[d.question] == i}
            for i, d in enumerate(s.disputes)]
    return pd.DataFrame(rows, columns=["question", "what", "from step", "reason", "in effect"])


def disputes_table(s: Session) -> None:
    if not s.disputes:
        st.caption("No disputed labels: every question is asked. Dispute one from a question in Optimize.")
        return
    n = len(s.folded.excluded())
    st.caption(f"{n} question{'s' if n != 1 else ''} excluded from minibatches and gates from the step shown on; "
               "earlier steps keep their scores, and nothing is deleted from the data.")
    st.dataframe(disputes_frame(s), hide_index=True, key="disputes_table",
                 column_config={"reason": st.column_config.TextColumn(width="large")})


def gate_exclusions(s: Session, step: Step) -> None:
    """The gate's score with and without the excluded questions (when its reports hold any of them)."""
    excluded = s.folded.excluded()
    if not excluded or step.gate is None:
        return
    ww = marks.gate_with_without(step.current_report, step.candidate_report, excluded)
    if ww is None:
        st.caption(f"{len(excluded)} excluded question(s) were not asked in this gate: its scores are without them.")
        return
    st.info(f"With the {len(ww.excluded_asked)} question(s) excluded since: current {pct(ww.old_with)} → chosen "
            f"{pct(ww.new_with)} (n={ww.n_with}). Without them: current {pct(ww.old_without)} → chosen "
            f"{pct(ww.new_without)} (n={ww.n_without}). The recorded verdict used every question.",
            icon=":material/flag:")


# ---------------------------------------------------------------- locked sentences


def _toggle_lock(s: Session, n: int, key: str) -> None:
    want = st.session_state.get(key, False)
    try:
        (s.lock_sentences if want else s.unlock_sentences)([n])
    except SessionError as exc:
        st.session_state[key] = not want
        _flash("error", md_escape(exc))


def lock_panel(s: Session, *, enabled: bool) -> None:
    """The current prompt sentence by sentence, each with a lock toggle (a locked one must stay verbatim)."""
    cur = s.current
    locked = {n for n, _ in marks.active_locks(s.folded.locked, cur.prompt)}
    sentences = split_sentences(cur.prompt)
    with st.expander(f"Lock sentences ({len(locked)} of {len(sentences)} locked)", expanded=bool(locked)):
        st.caption("A locked sentence must stay word for word: the edit and update calls are told so, a candidate "
                   "that changes it is flagged, the automatic policy never takes it, and you can accept it only "
                   "with an override.")
        for n, sentence in enumerate(sentences, 1):
            c = st.columns([1, 12], vertical_alignment="center")
            key = f"lock_{s.id}_v{cur.number}_{n}"
            c[0].toggle(f"Lock sentence {n}", value=n in locked, key=key, on_change=_toggle_lock, args=(s, n, key),
                        disabled=not enabled, label_visibility="collapsed")
            with c[1]:
                plain(f"{n}. {sentence}")  # numbered as `pgs lock --sentence N` and the Blame tab number them
