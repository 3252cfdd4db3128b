"""Studies: the runs of a study (`pgs study`), final validation per setting with intervals, calls and cost;
one click opens a run's session."""

import time

import streamlit as st

from core.study import INTERVAL, Study, StudyError, list_studies, read_results, studies_root, summarise_study
from ui import boot, state, studies_view
from ui.render import empty_state, md_code, md_escape, money

boot.page_guard()


def _open(sid: str) -> None:
    state.set_current(sid)
    st.session_state["study_open"] = sid


if st.session_state.pop("study_open", None):
    st.switch_page("pages/history.py")

st.title("Studies")
st.caption("A study reruns ordinary sessions over seeds, backward models, validation sizes, bandits and presets, "
           "to see whether a result holds. Run one with `pgs study` (e.g. `--preset-study \"stability over 5 "
           "seeds\"`); it is resumable with `pgs study --resume STUDY_ID`.")
root = studies_root(state.sessions_root())
rows = list_studies(root)
if not rows:
    empty_state(md_escape(f"No study yet in {root}. Run one: pgs study --task pubmedqa --forward SPEC --backward "
                          f"SPEC --seeds 3 --steps 3"))
    st.stop()
labels = {r["id"]: f"{r['id']} · {r['task']} · {r['method']} · {r['done']}/{r['runs']} runs done"
          + (f" · {r['preset_study']}" if r.get("preset_study") else "") for r in rows}
pick = st.selectbox("Study", list(labels), format_func=labels.get, key="study_pick")
try:
    study = Study.load(pick, root)
except StudyError as exc:
    st.error(md_escape(exc), icon=":material/error:")
    st.stop()
results = read_results(study, state.sessions_root())
per, overall = summarise_study(results)
spec = study.spec
st.subheader(f"Study {study.id}" + (f" · {md_escape(spec.preset_study)}" if spec.preset_study else ""))
st.markdown(f"Task **{md_escape(spec.task_name)}** · method "
            f"**{md_escape(spec.method)}** · forward {md_code(spec.forward)} · backward "
            f"{', '.join(md_code(b) for b in spec.backwards)} · {spec.steps} steps per run · "
            f"created {time.strftime('%Y-%m-%d %H:%M', time.localtime(study.created))}")
m = st.columns(4)
fv = overall.final_val
m[0].metric("Runs finished", f"{fv.n} / {len(results)}")
m[1].metric("Final validation, mean", "–" if fv.mean is None else f"{100 * fv.mean:.1f}%",
            help=None if fv.ci95 is None else f"95% interval {100 * fv.ci95[0]:.1f}–{100 * fv.ci95[1]:.1f}%")
m[2].metric("Calls", f"{overall.calls:,}")
m[3].metric("Cost", money(overall.cost_usd))

st.subheader("Final validation per setting")
st.plotly_chart(studies_view.study_figure(results), key="study_chart", config={"displaylogo": False})
st.caption(f"Each point is one run (one session); the bar is the mean with its {md_escape(INTERVAL)} (drawn "
           "within 0–100 %; the table gives it as computed).")
st.dataframe(studies_view.settings_table(per, overall), hide_index=True)

st.subheader("Runs")
st.dataframe(studies_view.runs_table(results), hide_index=True)
st.caption("Open a run's session (History):")
cols = st.columns(6)
for n, r in enumerate(results):
    cols[n % 6].button(f"{r.session[-4:]} · seed {r.settings.seed}", key=f"study_open_{r.session}", on_click=_open,
                       args=(r.session,), disabled=r.status == "pending" and r.final_val is None,
                       help=f"session {r.session}", width="stretch")
