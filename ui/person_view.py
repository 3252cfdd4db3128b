"""The person's controls inside a step (Optimize): feedback on a minibatch answer, and a gradient of their own."""

from __future__ import annotations

import streamlit as st

from core.session import Session, SessionError, Step

from .render import md_escape, plain


def _flash(kind: str, msg: str) -> None:
    st.session_state.setdefault("flash", []).append((kind, msg))


def _save_feedback(s: Session, key: str) -> None:
    qid, text = st.session_state.get(f"fb_q_{key}"), st.session_state.get(f"fb_text_{key}", "")
    try:
        s.add_feedback(qid, text)
    except SessionError as exc:
        _flash("error", md_escape(exc))
        return
    _flash("success", f"Your feedback on question {md_escape(qid)} is recorded." if text.strip()
           else f"Your feedback on question {md_escape(qid)} is withdrawn.")
    st.session_state[f"fb_text_{key}"] = ""


def feedback_editor(s: Session, step: Step, *, enabled: bool, key: str) -> None:
    """Write feedback on one minibatch answer: used in place of the model's for that question (TextGrad) or
    attached to that error (ProTeGi), by the proposal or the gradient that runs after it."""
    rows = {r.id: r for r in (step.forward[0].rows if step.forward else [])}
    if not rows:
        return
    use = ("in place of the model's per-question feedback (the loss) for that question" if s.config.method == "textgrad"
           else "attached to that error in the error group the gradient call reads")
    with st.container(border=True):
        st.markdown("**Your feedback on an answer** · " + md_escape(use))
        if step.feedback:
            for qid, text in step.feedback.items():
                st.markdown(f":green-badge[person] **{md_escape(qid)}**")
                plain(text)
        c = st.columns([2, 5], vertical_alignment="bottom")
        ids = list(rows)
        c[0].selectbox("Question", ids, key=f"fb_q_{key}",
                       format_func=lambda i: f"{i} · gold {rows[i].gold} · "
                                             f"{'right' if rows[i].correct else 'wrong'}")
        c[1].text_input("Feedback", key=f"fb_text_{key}", placeholder="e.g. the answer ignored the stated p-value")
        st.button("Save feedback", key=f"fb_save_{key}", disabled=not enabled, on_click=_save_feedback,
                  args=(s, key), help="recorded in the session; an empty text withdraws your feedback")


def _queue_gradient(key: str) -> None:
    src = st.session_state.get(f"pg_src_{key}")
    st.session_state["pending_gradient"] = (st.session_state.get(f"pg_text_{key}", ""),
                                            None if src in (None, "new") else src)


def _load_gradient(step: Step, key: str) -> None:
    src = st.session_state.get(f"pg_src_{key}")
    g = next((g for g in (step.proposal.gradients if step.proposal else []) if g.id == src), None)
    st.session_state[f"pg_text_{key}"] = g.text if g else ""


def gradient_editor(s: Session, step: Step, *, enabled: bool, key: str) -> None:
    """Edit a gradient, or write one from scratch, and apply it: the edit call (ProTeGi, then paraphrases and the
    bandit) or the update call (TextGrad) runs from your text; its candidates are marked 'person'."""
    grads = step.proposal.gradients if step.proposal else []
    names = {g.id: f"gradient {n}" + (" (yours)" if g.id in step.person_gradients else "")
             for n, g in enumerate(grads, 1)}
    runs = ("the edit call, its paraphrases and the bandit screen" if s.config.method == "protegi"
            else "the update call")
    with st.container(border=True):
        st.markdown(f"**Your gradient** · {md_escape(runs)} run from your text; the new candidates are marked "
                    "*person* and sit beside the others")
        st.selectbox("Start from", ["new"] + list(names), key=f"pg_src_{key}", on_change=_load_gradient,
                     args=(step, key), format_func=lambda x: "a blank page" if x == "new" else f"editing {names[x]}")
        st.text_area("What is wrong with the prompt", key=f"pg_text_{key}", height=120,
                     placeholder="e.g. The prompt never asks the model to quote the p-value it relies on.")
        st.button("Apply my gradient", key=f"pg_apply_{key}", type="primary", disabled=not enabled,
                  on_click=_queue_gradient, args=(key,), help="makes new candidates from your gradient (calls the "
                                                               "backward model)")


def run_queued_gradient(s: Session) -> bool:
    """Start the job of a gradient queued by 'Apply my gradient'; True if one started."""
    from . import actions

    pending = st.session_state.pop("pending_gradient", None)
    if not pending:
        return False
    text, replace = pending
    if not text.strip():
        st.error("Write your gradient first: what is wrong with the prompt.", icon=":material/error:")
        return False
    return actions.start_person_gradient(s, text, replace) is not None


def answered_note(s: Session, step: Step) -> None:
    """What a paused step is waiting for."""
    n_fail = sum(1 for r in step.forward[0].rows if not r.correct) if step.forward else 0
    st.info(f"Paused after the answers: {n_fail} of {len(step.minibatch_ids)} minibatch answers are wrong or "
            "unparsed. Read them, add your feedback, then write the gradients (the calls are paid only then) — "
            "or write your own gradient.", icon=":material/pause_circle:")
