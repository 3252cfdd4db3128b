"""Overview: what the loop is, and where the current session stands."""

import streamlit as st

from core.session import list_sessions
from ui import boot, state, step_view
from ui import demo_view
from ui.explain import explain
from ui.render import ci, md_code, md_escape, pct
from ui.setup_helpers import SESSION_COLUMNS, sessions_frame

boot.page_guard()
st.title("Prompt Gradient Studio")
st.markdown(
    "Tune a prompt with **textual gradients** while you stay in charge of every step. "
    "An LLM reads the questions your prompt gets wrong, writes critiques (*gradients*), and proposes "
    "edited prompts; you see the failures, the critiques and the candidates side by side, then accept, "
    "edit or reject. Every accepted prompt is scored on held-out validation questions and plotted.")

c1, c2, c3, c4 = st.columns(4)
c1.markdown("**1 · Minibatch**  \nThe current prompt answers a sample of training questions; the wrong ones "
            "are the *failures*.")
c2.markdown("**2 · Gradients**  \nA backward model explains why the prompt failed (ProTeGi: per error group; "
            "TextGrad: per-question feedback, then one critique).")
c3.markdown("**3 · Candidates**  \nEdits of the prompt that address the critique (ProTeGi adds paraphrases and "
            "a bandit pre-screen on training data).")
c4.markdown("**4 · Gate**  \nYour choice is scored on the validation set next to the current prompt; the gate "
            "policy and you decide whether it becomes the new version.")

explain("loop")
st.divider()
s, readonly = state.current_session()
if s is None:
    rows = list_sessions(state.sessions_root())
    if rows:  # sessions on disk, none chosen in this browser yet
        st.subheader(f"{len(rows)} session{'s' if len(rows) != 1 else ''} on disk — none open")
        st.dataframe(sessions_frame(rows), hide_index=True, width="stretch", column_config=SESSION_COLUMNS)
        ids = [r["id"] for r in rows]
        labels = {r["id"]: f"{r['id']} · {r.get('task') or '?'} · {r.get('title') or r.get('method') or ''}" for r in rows}
        oc = st.columns([3, 1], vertical_alignment="bottom")
        oc[0].selectbox("Session", ids, key="overview_pick", format_func=lambda x: labels.get(x, x))
        oc[1].button("Open", key="overview_open", type="primary", width="stretch",
                     on_click=lambda: state.set_current(st.session_state.get("overview_pick")))
        st.caption("Or create a new one in **Setup**.")
        demo_view.open_button()
        st.stop()
    st.subheader("No session yet")
    if state.any_provider():
        st.markdown("Create one in **Setup**: pick a task, the models and a method; the seed prompt is scored "
                    "first (the baseline), then you run steps in **Optimize**.")
    else:
        st.markdown("No model provider is configured. You can still browse the built-in tasks in **Setup** and "
                    "import a session bundle to replay it offline. To run models, add a key or a local server "
                    "in **Settings**.")
    demo_view.open_button()
    a, b, c = st.columns(3)
    a.page_link("pages/setup.py", label="New session (Setup)", icon=":material/tune:")
    b.page_link("pages/settings.py", label="Providers (Settings)", icon=":material/settings:")
    c.page_link("pages/setup.py", label="Import a bundle (Setup)", icon=":material/upload_file:")
    st.stop()

cfg = s.config
task = cfg.task.get("name") or cfg.task.get("file")
st.subheader(f"Session {s.id}")
if cfg.title:
    st.caption(md_escape(cfg.title))
state.banners(s, readonly)
st.markdown(f"Task **{md_escape(task)}** · method **{md_escape(cfg.method)}** ({md_escape(cfg.preset)}) · "
            f"gate **{md_escape(cfg.policy)}** · forward {md_code(cfg.forward)} · backward {md_code(cfg.backward)}")
m = st.columns(4)
if s.versions:
    v0, cur = s.versions[0], s.current
    m[0].metric("Seed baseline", pct(v0.accuracy), help=ci(v0.report.interval))
    m[1].metric(f"Current (v{cur.number})", pct(cur.accuracy),
                **(step_view.points_delta(100 * (cur.accuracy - v0.accuracy), "pts vs seed") if cur.number else {}),
                help=ci(cur.report.interval))
else:
    m[0].metric("Seed baseline", "not scored")
m[2].metric("Steps", f"{sum(1 for x in s.steps if x.outcome)} done",
            help=f"{sum(1 for x in s.steps if x.outcome == 'accepted')} accepted")
m[3].metric("State", s.state)

hints = {
    "new": "Score the seed prompt (the baseline) in Optimize.",
    "ready": "Run the next step in Optimize.",
    "started": "A step was interrupted; run it again in Optimize (finished calls are cached).",
    "proposed": "Candidates are waiting for your decision in Optimize.",
    "decided": "Validate your choice in Optimize.",
    "validated": "Confirm or override the gate in Optimize.",
    "stopped": f"The session stopped ({md_escape(s.stopped)}). Review it in History, export it, or evaluate on test.",
}
hints = demo_view.hints(s, hints)
st.info(hints.get(s.state, ""), icon=":material/arrow_forward:")
l1, l2, l3 = st.columns(3)
l1.page_link("pages/optimize.py", label="Optimize", icon=":material/auto_fix_high:")
l2.page_link("pages/history.py", label="History", icon=":material/timeline:")
l3.page_link("pages/evaluate.py", label="Evaluate", icon=":material/science:")
