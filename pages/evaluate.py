"""Evaluate: chosen versions and the paper's baselines on the test split, head to head."""

import pandas as pd
import streamlit as st

from core.baselines import strategy_prompt
from core.testlock import spend_of
from ui import boot, charts, reveal, state
from ui import demo_view
from ui.explain import explain
from ui.evaluation import Entry, failed_calls_note, head_to_head, long_csv
from ui.jobs import job_panel
from ui.render import empty_state, md_code, md_escape, money, pct

boot.page_guard()
st.title("Evaluate")
s, readonly = state.current_session()
if s is None:
    empty_state("No session yet — create one in Setup, then come back to score its prompts on the test split.",
                "pages/setup.py", "Go to Setup")
    st.stop()
if not s.versions:
    empty_state("Score the seed prompt in Optimize first.", "pages/optimize.py", "Go to Optimize")
    st.stop()

state.banners(s, readonly)
test = s.task.split("test")
missing = state.missing_for(s.config)
if missing:
    st.warning("Evaluating needs the forward model: " + md_escape("; ".join(missing)) + ".", icon=":material/key:")
st.caption(f"Test split: {len(test)} questions, never used for tuning and sealed: scoring on it is a recorded reveal. "
           f"Forward model {md_code(s.config.forward)}, temperature 0; answers are cached, so re-running costs nothing.")
explain("test")

versions = {f"v{v.number} (step {v.step}, {v.origin}, val {pct(v.accuracy)})": v for v in s.versions}
c = st.columns([3, 2])
chosen = c[0].multiselect("Prompt versions", list(versions),
                          default=list(versions)[:1] + (list(versions)[-1:] if len(versions) > 1 else []),
                          key="eval_versions")
with c[1]:
    baselines = st.multiselect("Baselines (AutoMedPrompt paper)", ["zero-shot", "cot", "few-shot"], key="eval_baselines")
    k = st.number_input("K for few-shot", min_value=1, max_value=20, value=3, key="eval_k",
                        disabled="few-shot" not in baselines)
entries = [Entry(name, versions[name].prompt, versions[name].number) for name in chosen]
for b in baselines:
    strat = f"few-shot:{k}" if b == "few-shot" else b
    entries.append(Entry(f"baseline: {strat}", strategy_prompt(strat, s.task, seed=s.config.seed)))
c = st.columns([1, 2, 2])
limit = c[0].number_input("Questions (0 = all)", min_value=0, max_value=len(test), value=min(100, len(test)),
                          key="eval_limit")
n = int(limit) or len(test)
names = [e.name for e in entries]
ref = c[1].selectbox("Reference for the paired test", names, key="eval_ref") if names else None
c[2].caption(f"Up to {len(entries) * n:,} forward calls ({len(entries)} prompt(s) × {n} questions); "
             "cached answers are free.")

job = state.active_job(s)
can_run = bool(entries) and not missing and job is None
reveal.reveal_controls(s, readonly, entries, int(limit) or None, can_run)

if job is not None and job.running:
    job_panel(job, key="evaluate")
    st.stop()

results = state.ss("eval_results", {})
last = state.reg().latest(state.owner(s), ("evaluate",))
if last is not None and last.result and results.get(s.id, (None,))[0] != last.id:
    results[s.id] = (last.id, last.result)
if last is not None and not last.seen:
    job_panel(last, key="evaluate")
if demo_view.recorded_scores(s):
    st.stop()
if s.id not in results:
    st.info("No results yet: choose prompts and press “Evaluate on test”.", icon=":material/info:")
    st.stop()

reports = results[s.id][1]
ref_name = ref if ref in reports else next(iter(reports))
rows = head_to_head(reports, ref_name)
st.subheader("Head to head")
if any(r["cancelled"] for r in rows):
    st.warning("Cancelled: the scores below cover only the questions answered before the stop.", icon=":material/stop:")
if (note := failed_calls_note(rows)) is not None:
    st.warning(md_escape(note), icon=":material/error:")
table = pd.DataFrame([{
    "prompt": r["prompt"], "accuracy": r["accuracy"], "95% CI": f"{r['ci_low']:.0%}–{r['ci_high']:.0%}",
    "macro-F1": r["macro_f1"], "n": r["n"], "questions": f"{r['answered']} answered, {r['errors']} failed",
    "unparsed": r["unparsed"],
    "Δ vs reference": charts.delta_text(r["delta_vs_ref"]), "McNemar p": r["p_vs_ref"],
    "cost": r["cost_usd"]} for r in rows])
spent, on_test = spend_of(reports), s.ledger.get("test")
st.caption(f"These results: {spent.calls:,} calls, {money(spent.cost_usd)} ({spent.cached:,} answered from the cache)"
           + (f" · every Evaluate run of this session: {on_test.calls:,} calls, {money(on_test.cost_usd)}"
              if on_test is not None else "") + " · all counted in the session's spend (sidebar, History).")
st.dataframe(table, hide_index=True, placeholder="—", column_order=[  # what a narrow screen must show first
    "prompt", "accuracy", "Δ vs reference", "McNemar p", "95% CI", "macro-F1", "n", "questions", "unparsed", "cost"],
             column_config={
    "accuracy": st.column_config.NumberColumn(format="percent"),
    "macro-F1": st.column_config.NumberColumn(format="%.3f"),
    "Δ vs reference": st.column_config.TextColumn(help="accuracy change against the reference, on the questions "
                                                         "both answered"),
    "McNemar p": st.column_config.NumberColumn(format="%.3g", help="none for the reference itself"),
    "cost": st.column_config.NumberColumn(format="$%.4f")})
dropped = sum(r["dropped_pairs"] or 0 for r in rows)
st.caption(f"Accuracy and its interval are over the answered questions. McNemar: exact paired test against "
           f"**{md_escape(ref_name)}** on the questions both answered"
           + (f" ({dropped} pair(s) dropped: a call failed on either side)." if dropped else "."))
explain("mcnemar")
st.plotly_chart(charts.eval_figure(rows), key="eval_chart", config={"displaylogo": False})
d = st.columns(2)
d[0].download_button("Download summary (CSV)", pd.DataFrame(rows).to_csv(index=False), file_name=f"{s.id}-test.csv",
                     mime="text/csv", key="dl_eval_summary", on_click="ignore")
d[1].download_button("Download per-question results (CSV)", lambda: long_csv(reports),
                     file_name=f"{s.id}-test-questions.csv", mime="text/csv", key="dl_eval_rows", on_click="ignore")
with st.expander("The prompts evaluated"):
    for name, rep in reports.items():
        st.markdown(f"**{md_escape(name)}**")
        st.code(rep.prompt, language=None, wrap_lines=True)
