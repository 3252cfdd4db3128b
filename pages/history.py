"""History: validation per step, spend, prompt versions with diffs, the correctness grid, each step's
record and lineage; export and copy."""

from functools import partial

import streamlit as st

from core.diffs import unified
from core.testlock import AFTER_TEST, steps_after_reveal
from core.lineage import verdicts
from ui import blame_view, boot, charts, history_actions, person_marks, reveal, state, step_view, undo
from ui.explain import explain
from ui.render import diff, empty_state, md_code, md_escape, money, pct, plain

try:
    from core import bundle
except ImportError:  # the bundle module may not exist yet
    bundle = None

boot.page_guard()


@st.cache_resource(show_spinner=False, max_entries=16)
def _cached(kind: str, sid: str, n_events: int, step: int, _s):
    """Figures and tables of a session, rebuilt only when its log grows."""
    if kind == "history":
        return charts.history_figure(_s)
    if kind == "spend":
        return charts.spend_table(_s)
    if kind == "grid":
        return charts.correctness_grid(_s)
    if kind == "steps":
        return charts.steps_table(_s)
    return charts.lineage_figure(_s, _s.steps[step])


st.title("History")
s, readonly = state.current_session()
if s is None:
    empty_state("No session yet — create one in Setup, or import a bundle there.", "pages/setup.py", "Go to Setup")
    st.stop()
state.banners(s, readonly)
if not s.versions:
    job = state.active_job(s)
    if job is not None:
        empty_state(f"Nothing to show yet — {md_escape(job.label)} is running; its progress is in Optimize.",
                    "pages/optimize.py", "Go to Optimize")
    else:
        empty_state("Nothing to show yet — score the seed prompt in Optimize.", "pages/optimize.py", "Go to Optimize")
    st.stop()

reveal.after_test_steps_note(s)
after_test = steps_after_reveal(s)
tab_chart, tab_versions, tab_blame, tab_grid, tab_steps, tab_labels, tab_overfit, tab_export = st.tabs(
    ["Validation", "Prompt versions", "Blame", "Question grid", "Steps and lineage", "Disputed labels", "Overfitting",
     "Export"])

with tab_chart:
    st.plotly_chart(_cached("history", str(s.dir), len(s.events), 0, s), key="history_chart",
                    config={"displaylogo": False})
    st.caption("Each marker is a validated step: the chosen prompt's validation accuracy with its 95% Wilson "
               "interval; ● accepted, ✕ rejected, ★ accepted by you against the gate. The dashed line is the seed "
               "baseline.")
    explain("interval")
    story = _cached("steps", str(s.dir), len(s.events), 0, s)
    if not story.empty:
        st.markdown("**Every step, and who decided it**")
        st.dataframe(story, hide_index=True, key="steps_story", placeholder="—", column_config={
            "step": st.column_config.NumberColumn(width=50),
            "validation": st.column_config.TextColumn("validation (current → chosen)"),
            "p": st.column_config.NumberColumn("McNemar p", format="%.3g"),
            "decided": st.column_config.TextColumn("outcome, and who decided", width="medium")})
    spend = _cached("spend", str(s.dir), len(s.events), 0, s)
    if not spend.empty:
        c = st.columns(3)
        c[0].metric("Calls (cumulative)", f"{int(spend['cumulative_calls'].iloc[-1]):,}",
                    help=f"{int(spend['cached'].sum()):,} more answered from the cache")
        c[1].metric("Tokens (cumulative)", f"{int(spend['cumulative_tokens'].iloc[-1]):,}")
        c[2].metric("Cost (cumulative)", money(float(spend["cumulative_cost_usd"].iloc[-1])))
        st.dataframe(spend, hide_index=True, column_config={
            "cached": st.column_config.NumberColumn("from cache"),
            "cost_usd": st.column_config.NumberColumn("cost", format="$%.4f"),
            "cumulative_calls": st.column_config.NumberColumn("calls so far"),
            "cumulative_tokens": st.column_config.NumberColumn("tokens so far"),
            "cumulative_cost_usd": st.column_config.NumberColumn("cost so far", format="$%.4f")})

with tab_versions:
    vs = s.versions
    names = [f"v{v.number} · step {v.step} · {v.origin}" + (f" of v{v.reverted_to}" if v.reverted_to is not None
                                                                else "") + f" · {pct(v.accuracy)}"
             + (f" · {AFTER_TEST}" if v.step in after_test else "") for v in vs]
    c = st.columns(2)
    a = c[0].selectbox("From", range(len(vs)), index=max(0, len(vs) - 2), format_func=names.__getitem__, key="diff_a")
    b = c[1].selectbox("To", range(len(vs)), index=len(vs) - 1, format_func=names.__getitem__, key="diff_b")
    diff(vs[a].prompt, vs[b].prompt)
    with st.expander("Unified diff"):
        plain(unified(vs[a].prompt, vs[b].prompt, f"v{a}", f"v{b}"), box=True)
    cols = st.columns(2)
    with cols[0]:
        st.markdown(f"**v{a}**")
        plain(vs[a].prompt, copy=True)
    with cols[1]:
        st.markdown(f"**v{b}**")
        plain(vs[b].prompt, copy=True)
    undo.revert_control(s, enabled=not readonly and state.active_job(s) is None)

with tab_blame:
    blame_view.blame_tab(s, after_test)

with tab_labels:
    person_marks.disputes_table(s)

with tab_grid:
    grid = _cached("grid", str(s.dir), len(s.events), 0, s)
    current = charts.current_column(s)
    st.caption("Rows are validation questions, columns the versions and the rejected candidates. "
               "✓ right · ✗ wrong · ✓+ fixed by that edit · ✗− broken by that edit. "
               f"The current prompt is {md_escape(current)}. Click a row to see every version's answer.")
    explain("grid")
    how = st.segmented_control("Show questions", charts.GRID_FILTERS, default="changed", key="grid_filter",
                               format_func={"changed": "changed by an edit", "failing now": "failing now",
                                            "fixed": "fixed", "broken": "broken", "all": "all"}.__getitem__)
    shown = charts.filter_grid(grid, how or "all", current)
    if shown.empty:
        st.caption("No questions match this filter." if not grid.empty else "No validation answers yet.")
    else:
        colour = shown.size <= charts.GRID_STYLE_CELLS
        ids = list(shown.index)
        st.dataframe(charts.grid_style(shown) if colour else shown, height=min(600, 38 + 35 * len(shown)),
                     key="grid_table", on_select=partial(history_actions.pick_question, ids),
                     selection_mode="single-row")
        if not colour:
            st.caption(f"Colours are off for a grid this large ({shown.size:,} cells), to keep the page quick.")
        if st.session_state.get("grid_q") not in ids:
            st.session_state["grid_q"] = ids[0]
        qid = st.selectbox("Question", ids, key="grid_q")
        answers = charts.question_answers(s, qid)
        st.markdown(f"**Question {md_escape(qid)}** — gold answer {md_code(answers['gold'].iloc[0]) if len(answers) else ''}")
        st.dataframe(answers.drop(columns=["gold", "raw output"]), hide_index=True, key="grid_answers")
        with st.expander("The question as the model saw it", expanded=len(state.question_text(s, qid) or "") < 600):
            plain(state.question_text(s, qid), box=True)
        with st.expander("Raw model output per version"):
            for _, row in answers.iterrows():
                st.caption(md_escape(row["prompt"]))
                plain(row["raw output"], box=True)

with tab_steps:
    steps = list(reversed(s.steps))
    if not steps:
        st.caption("No steps yet.")
    else:
        story = verdicts(s.events)
        idx = st.selectbox("Step", range(len(steps)), key="hist_step",
                           format_func=lambda i: f"step {steps[i].index}"
                                                 + (f" (attempt {steps[i].attempt + 1})" if steps[i].attempt else "")
                                                 + f" — {steps[i].outcome or steps[i].status}"
                                                 + (f" ({story[steps[i].index].text()})"
                                                    if steps[i].index in story and story[steps[i].index].override else "")
                                                 + (f" · {AFTER_TEST}" if steps[i].index in after_test else ""))
        chosen = steps[idx]
        if chosen.index in after_test:
            st.warning(f"Step {chosen.index} was {AFTER_TEST}: its decision came after test scores were revealed.",
                       icon=":material/visibility:")
        fig = _cached("lineage", str(s.dir), len(s.events), s.steps.index(chosen), s)
        if fig is not None:
            st.markdown("**Lineage:** each failed question → the gradient written from it → the candidates it led to "
                        "(a paraphrase beside the edit it rephrases) → the decision. Hover a label for its full text.")
            explain("lineage")
            st.plotly_chart(fig, key="lineage_chart", config={"displaylogo": False})
        step_view.step_record(s, chosen, key=f"h{chosen.index}_{chosen.attempt}")

with tab_overfit:
    reveal.confirmation_panel(s, readonly)

with tab_export:
    best = max(s.versions, key=lambda v: (v.accuracy, v.number))
    st.markdown(f"**Current prompt** (v{s.current.number}, {pct(s.current.accuracy)} on validation) — "
                "the copy button is in the box's corner:")
    plain(s.current.prompt, copy=True)
    if best.number != s.current.number:
        st.caption(f"The best version on validation is v{best.number} ({pct(best.accuracy)}).")
    if bundle is None:
        st.info("Bundle export is not available in this build (core.bundle is missing).", icon=":material/info:")
    else:
        c = st.columns(2)
        cache = state.response_cache()
        c[0].download_button("Download session bundle (.json)", lambda: bundle.bundle_bytes(s, cache),
                             file_name=f"{s.id}.bundle.json", mime="application/json", key="dl_bundle",
                             on_click="ignore", help="events + every response used: replayable offline with no key")
        c[1].download_button("Download Markdown report", lambda: bundle.markdown_report(s).encode("utf-8"),
                             file_name=f"{s.id}.md", mime="text/markdown", key="dl_report", on_click="ignore")
    st.caption(f"Session folder: {md_escape(str(s.dir))}")
