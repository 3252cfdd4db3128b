"""Optimize: run a step, read the failures and gradients, choose a candidate or edit, pass the gate."""

import pandas as pd
import streamlit as st

from core.estimate import prevalidation
from core.session import SessionError
from core.step_runner import ahead_candidates
from ui import actions, boot, live_text, person_marks, person_view, servers, state, step_view, undo
from ui import demo_view
from ui.explain import explain
from ui.estimate import step_estimate
from ui.jobs import job_panel
from ui.render import ci, empty_state, md_escape, money, pct, plain

boot.page_guard()
st.title("Optimize")
s, readonly = state.current_session()
if s is None:
    empty_state("No session yet — create one in Setup.", "pages/setup.py", "Go to Setup")
    st.stop()

reg = state.reg()
job = state.active_job(s)
missing = state.missing_for(s.config)
state.banners(s, readonly, missing)
ahead_running = job is not None and job.kind == "prevalidate"  # validating ahead does not block the decision
can_act = not readonly and not missing and (job is None or ahead_running)

for kind, msg in st.session_state.pop("flash", []):
    getattr(st, kind)(msg)
can_act = servers.server_gate(s, enabled=can_act) and can_act  # an imported session: servers confirmed first

# ---------- actions queued by buttons (callbacks) ----------
pending = st.session_state.pop("pending_action", None)
if pending and can_act and ahead_running:  # a decision does not wait for the look ahead: it stops it
    actions.stop_prevalidate(s)
if pending and can_act:
    what, arg = pending
    try:
        if what == "accept":
            s.decide("accept", candidate=arg)
        elif what == "accept_override":  # a candidate that changes a locked sentence, taken explicitly
            s.decide("accept", candidate=arg, override=True)
        elif what == "edit":
            s.decide("edit", prompt=arg, override=bool(st.session_state.get("edit_override")))
        actions.start_validate(s)
    except SessionError as exc:
        st.error(md_escape(exc), icon=":material/error:")
    job = state.active_job(s)
    can_act = can_act and job is None
if can_act and person_view.run_queued_gradient(s):  # 'Apply my gradient' (a job: it calls the backward model)
    job = state.active_job(s)
    can_act = can_act and job is None

# ---------- header ----------
cfg = s.config
m = st.columns(5)
if s.versions:
    cur, v0 = s.current, s.versions[0]
    m[0].metric(f"Current (v{cur.number})", pct(cur.accuracy),
                **(step_view.points_delta(100 * (cur.accuracy - v0.accuracy), "pts vs seed") if cur.number else {}),
                help=f"validation accuracy, {ci(cur.report.interval)}, n={cur.report.n}")
    m[1].metric("Seed baseline", pct(v0.accuracy), help=ci(v0.report.interval))
else:
    m[0].metric("Current", "not scored")
m[2].metric("Steps", sum(1 for x in s.steps if x.outcome),
            help=f"steps done; {sum(1 for x in s.steps if x.outcome == 'accepted')} accepted")
m[3].metric("Rejections", f"{s.rejections_in_a_row()} / {cfg.patience}",
            help="rejections in a row / patience: auto-run stops when they meet")
m[4].metric("Spent", money(s.spend.cost_usd), help=f"{s.spend.calls} calls, {s.spend.cached} from cache")
explain("versions")

if s.versions:
    reverted = f" — v{s.current.reverted_to}'s prompt, reverted" if s.current.reverted_to is not None else ""
    with st.expander(f"Current prompt (v{s.current.number}){reverted} — copy it with the button in the corner",
                     expanded=len(s.current.prompt) < 800):
        plain(s.current.prompt, copy=True)
    person_marks.lock_panel(s, enabled=can_act)
if demo_view.recorded_steps(s):
    st.stop()


def live() -> None:
    """Refreshed every second while a job runs: the steps finished so far and the open step."""
    rows = [{"step": x.index, "outcome": x.outcome or x.status,
             "validation": pct(x.gate.new_accuracy) if x.gate else "",
             "was": pct(x.gate.old_accuracy) if x.gate else "",
             "candidates": len(x.proposal.candidates) if x.proposal else 0}
            for x in s.steps[-8:]]
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True)
    if s.versions:
        st.caption(f"Current prompt v{s.current.number}: {pct(s.current.accuracy)} on validation")
    live_text.draw(job.progress)


if ahead_running:  # in the background: the proposal stays readable (and decidable) below
    job_panel(job, key="optimize")
elif job is not None:
    job_panel(job, key="optimize", live=live, version=lambda: len(s.events))
    st.stop()
last = reg.latest(state.owner(s))
if last is not None and not last.seen:
    job_panel(last, key="optimize")

if s.stopped:
    st.warning(f"This session has stopped: {md_escape(s.stopped)}. Review it in History, export it, or evaluate it on "
               "the test split; start a new session to keep tuning.", icon=":material/stop_circle:")
    st.page_link("pages/history.py", label="History and export", icon=":material/timeline:")
    st.stop()

state_ = s.state
step = s.step

def auto_controls() -> None:
    """Auto-run N steps: the top candidate is accepted and the session's gate decides."""
    c = st.columns([1, 1, 2], vertical_alignment="bottom")
    n_auto = c[0].number_input("Steps to auto-run", min_value=1, max_value=50, value=3, key="auto_n")
    resume = s.auto is not None
    if c[1].button("Continue auto-run" if resume else f"Auto-run {n_auto} steps", key="auto_run",
                   disabled=not can_act, help=f"accept the top candidate each step; the {cfg.policy} gate decides"):
        actions.start_auto(s, int(n_auto))
        st.rerun()
    c[2].caption(f"Auto-run accepts the top candidate each step, lets the **{md_escape(cfg.policy)}** gate decide, "
                 f"and stops after {cfg.patience} rejections in a row." +
                 (f" An interrupted auto-run is waiting to reach {s.auto['steps']} finished steps." if resume else ""))


# ---------- new: the baseline ----------
if state_ == "new":
    n = len(s.val_examples())
    est = s.estimate_baseline()
    st.subheader("Step 0 · score the seed prompt")
    st.markdown(f"The seed prompt is scored on the {n} validation questions first, so the first gate compares "
                f"against something real. About {est['calls']} calls, {md_escape(state.cost_text(cfg, est['cost_usd']))}.")
    plain(cfg.seed_prompt, box=True)
    c = st.columns([1, 4], vertical_alignment="bottom")
    if c[0].button("Score the seed prompt", type="primary", key="run_baseline", disabled=not can_act):
        actions.start_baseline(s)
        st.rerun()
    with c[1]:
        auto_controls()
    st.stop()

# ---------- ready: run a step or auto-run ----------
if state_ == "ready" or (state_ == "started"):
    done = [x for x in s.steps if x.outcome]
    if done:
        lx = done[-1]
        change = (f" ({pct(lx.gate.old_accuracy)} → {pct(lx.gate.new_accuracy)})" if lx.gate else "")
        st.caption(f"Last step {lx.index}: {lx.outcome}{change}.")
    est = step_estimate(s, cached=state.response_cache() is not None)
    nxt = s.next_step_index
    st.subheader(f"Step {nxt}")
    if state_ == "started":
        st.info("This step was interrupted before its proposal was recorded; run it again on the same minibatch "
                "(finished calls come from the cache).", icon=":material/undo:")
    st.markdown(f"Next step: about **{est['proposal']:,} calls** before you decide (minibatch {est['forward']}, "
                f"optimiser {est['optimiser']}, bandit {est['bandit']}), then **{est['validation']:,}** to validate "
                f"your choice: **{md_escape(state.cost_text(cfg, est['cost_usd']))}** in all.")
    pause = st.toggle("Pause after the answers", value=True, key="pause_after_forward",
                      help="read the minibatch answers and give feedback before any gradient is paid for")
    c = st.columns([1, 6], vertical_alignment="bottom")
    if c[0].button("Run step", type="primary", key="run_step", disabled=not can_act,
                   help="sample a minibatch, answer it, and propose gradients and candidates"):
        actions.start_step(s, pause=pause)
        st.rerun()
    with c[1]:
        auto_controls()
    st.stop()

# ---------- answered: a guided step, paused before its gradients ----------
if state_ == "answered":
    st.subheader(f"Step {step.index} · read the answers" + (f" · attempt {step.attempt + 1}" if step.attempt else ""))
    person_view.answered_note(s, step)
    with st.expander("Minibatch: the current prompt on training questions", expanded=True):
        step_view.minibatch(s, step, key=f"s{step.index}")
    person_view.feedback_editor(s, step, enabled=can_act, key=f"s{step.index}")
    c = st.columns([2, 1])
    if c[0].button("Continue: write gradients", type="primary", key="continue_step", disabled=not can_act,
                   width="stretch", help="the gradient calls and candidates, using your feedback"):
        actions.start_continue(s)
        st.rerun()
    if c[1].button("Regenerate", key="regenerate_answered", disabled=not can_act, width="stretch",
                   help="a new minibatch"):
        actions.start_step(s, regenerate=True, pause=True)
        st.rerun()
    with st.expander("Or write your own gradient (no model gradient is paid for)"):
        person_view.gradient_editor(s, step, enabled=can_act, key=f"a{step.index}")
    st.stop()

def decision_controls(step, *, proposed: bool) -> None:
    """Edit (from the current prompt or any candidate) and accept; reject all; regenerate; skip."""
    marker = (s.id, step.index, step.attempt, len(step.person_gradients))  # a gradient of yours: new candidates
    if st.session_state.get("edit_for") != marker:
        st.session_state["edit_for"] = marker
        st.session_state["edit_source"] = "current"
        st.session_state["edit_text"] = s.current.prompt
    sources = ["current"] + [c.id for c in step.proposal.candidates]

    def _load_source() -> None:
        src = st.session_state["edit_source"]
        st.session_state["edit_text"] = s.current.prompt if src == "current" else step.proposal.candidate(src).prompt

    def _accept_edit() -> None:
        st.session_state["pending_action"] = ("edit", st.session_state["edit_text"])

    with st.container(border=True):
        ec = st.columns([3, 1], vertical_alignment="bottom")
        ec[0].selectbox("Edit, starting from", sources, key="edit_source", on_change=_load_source,
                        format_func=lambda x: "the current prompt" if x == "current"
                        else f"candidate {sources.index(x)} ({x})")
        ec[1].button("Accept edit", key="accept_edit", type="primary", disabled=not can_act, on_click=_accept_edit,
                     width="stretch", help="score your text on validation against the current prompt")
        st.text_area("Your prompt", key="edit_text", height=220)
        if s.active_locks():
            st.checkbox("Override the locked sentences (accept my edit even if it changes one)", key="edit_override")
    b = st.columns(4)
    if b[0].button("Reject all", key="reject_all", disabled=not can_act, width="stretch",
                   help="record a rejection; counts toward patience"):
        s.decide("reject")
        st.session_state["flash"] = [("info", f"Step {step.index}: all candidates rejected.")]
        st.rerun()
    if proposed and b[1].button("Regenerate", key="regenerate", disabled=not can_act, width="stretch",
                                help="a new sample of gradients and candidates on a new minibatch"):
        actions.start_step(s, regenerate=True, pause=st.session_state.get("pause_after_forward", True))
        st.rerun()
    if b[2].button("Skip", key="skip", disabled=not can_act, width="stretch",
                   help="move on without a decision (e.g. no failures)"):
        s.decide("skip")
        st.rerun()


def validate_ahead(step) -> None:
    """The candidates' gates computed in the background (cost shown first): started by itself for a local
    server (Settings: validate ahead), by the button otherwise; accepting one then shows its gate at once."""
    if state.response_cache() is None:
        return
    label = actions.prevalidate_label(s)
    ahead = reg.latest(state.owner(s), ("prevalidate",))
    ahead = ahead if ahead is not None and ahead.label == label else None
    n = len(ahead_candidates(s.folded, step))
    if not n:
        return
    est = prevalidation(s.folded, n)
    cost = f"about {est['calls']:,} calls, {md_escape(state.cost_text(cfg, est['cost_usd']))}"
    if ahead is None:
        if cfg.validates_ahead() and can_act and not ahead_running and actions.start_prevalidate(s) is not None:
            st.rerun()  # started by itself (a local server): its progress shows above the proposal
        st.button(f"Validate the {n} candidate(s) now ({cost})", key="validate_ahead",
                  disabled=not can_act or ahead_running, on_click=actions.start_prevalidate, args=(s,),
                  help="score every candidate on validation while you read them; the one you accept then shows "
                       "its gate at once (answered from the cache)")
        return
    if ahead.status == "done" and ahead.result:
        rows = [{"candidate": cid, "gate": "would pass" if g.passed else "would fail",
                 "validation": f"{pct(g.old_accuracy)} → {pct(g.new_accuracy)}", "p": g.p_value}
                for cid, g in ahead.result.items()]
        st.markdown("**Gates ready** (validated ahead; accepting one records its gate at once)")
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="ahead_gates",
                     column_config={"p": st.column_config.NumberColumn("McNemar p", format="%.3g")})


# ---------- proposed: decide ----------
if state_ == "proposed":
    st.subheader(f"Step {step.index}" + (f" · attempt {step.attempt + 1}" if step.attempt else ""))
    with st.expander("Minibatch: the current prompt on training questions", expanded=True):
        step_view.minibatch(s, step, key=f"s{step.index}", dispute=can_act)
    undo.retry_panel(s, step, enabled=can_act)
    validate_ahead(step)
    step_view.proposal_view(s, step, actions=can_act, key=f"s{step.index}")
    st.markdown("#### Your feedback and your gradient")
    pc = st.columns(2)
    with pc[0]:
        person_view.gradient_editor(s, step, enabled=can_act, key=f"p{step.index}")
    with pc[1]:
        person_view.feedback_editor(s, step, enabled=can_act, key=f"p{step.index}")

    st.markdown("#### Your decision")
    decision_controls(step, proposed=True)
    st.stop()

# ---------- decided: validate ----------
if state_ == "decided":
    st.subheader(f"Step {step.index} · validation")
    step_view.decision_summary(s, step)
    n = len(s.val_examples())
    st.markdown(f"Score the chosen prompt and the current one on the same {n} validation questions "
                "(the current prompt's answers come from the cache).")
    if st.button("Validate", type="primary", key="validate", disabled=not can_act):
        actions.start_validate(s)
        st.rerun()
    with st.expander("Change your decision (before it is validated)"):
        step_view.proposal_view(s, step, actions=can_act, key=f"s{step.index}")
        decision_controls(step, proposed=False)
    st.stop()

# ---------- validated: the gate ----------
if state_ == "validated":
    st.subheader(f"Step {step.index} · the gate")
    step_view.decision_summary(s, step)
    step_view.gate_view(s, step, dispute=can_act)
    g = step.gate
    b = st.columns(3)
    verdict = "accept" if g.passed else "reject"
    if b[0].button(f"Confirm: {verdict}", type="primary", key="confirm", disabled=not can_act, width="stretch",
                   help="record the gate policy's verdict"):
        s.confirm()
        msg = (f"Step {step.index} accepted: v{s.current.number} is the current prompt." if g.passed
               else f"Step {step.index} rejected; the current prompt stays.")
        st.session_state["flash"] = [("success" if g.passed else "info", msg)]
        st.rerun()
    other = not g.passed
    if b[1].button(f"Override: {'accept' if other else 'reject'} anyway", key="override", disabled=not can_act,
                   width="stretch", help="your decision over the policy's; recorded as an override"):
        s.confirm(accept=other)
        msg = (f"Step {step.index} accepted by override: v{s.current.number} is the current prompt." if other
               else f"Step {step.index} rejected by override.")
        st.session_state["flash"] = [("success" if other else "info", msg)]
        st.rerun()
    with st.expander("What was sent this step (minibatch, gradients, candidates)"):
        step_view.minibatch(s, step, key=f"v{step.index}")
        step_view.proposal_view(s, step, actions=False, key=f"v{step.index}")
