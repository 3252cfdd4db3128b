"""Setup: create a session (task, models, method, seed prompt, gate, budget), or open/delete/import one."""

from dataclasses import replace

import pandas as pd
import streamlit as st

from core.baselines import SEED_PROMPT, strategy_prompt
from core.gate import POLICIES, POLICY_HELP
from core.llm import LLMError, for_surface, parse_spec
from core.session import (DEFAULT_PRESET, METHODS, PRESETS, Session, SessionConfig, SessionError, default_policy,
                          delete_session, list_sessions)
from core.tasks import TaskError, builtin_spec
from ui import actions, boot, saved_settings, state
from ui import setup_helpers as H
from ui.estimate import estimate
from ui.jobs import JobBusy, registry, session_key
from ui.render import md_escape, money, plain
from ui.charts import replay_table
from ui.explain import explain

try:
    from core import bundle
except ImportError:  # the bundle module may not exist yet
    bundle = None

boot.page_guard()
st.title("Setup")
H.auto_probe_ollama()

if not state.any_provider():
    st.warning(
        "**No model provider is configured yet.** To run models, do one of these:\n"
        "- set `OPENAI_API_KEY` or `ANTHROPIC_API_KEY` in the environment before starting the app, or in "
        "`.streamlit/secrets.toml`;\n"
        "- or enter a key in **Settings** (kept in this browser session's memory only);\n"
        "- or start a local OpenAI-compatible server (e.g. `ollama serve`, then `ollama pull llama3.2`) and probe "
        "it in **Settings**.\n\n"
        "Meanwhile you can browse the tasks below and import a bundle to replay it offline.", icon=":material/key:")

tab_new, tab_sessions, tab_import = st.tabs(["New session", "Sessions", "Import bundle"])

# ------------------------------------------------------------------ new session
def split_seed(col) -> int:
    return int(col.number_input("Split seed", min_value=0, value=0, step=1, key="split_seed",
                                help="the same seed gives the same train/validation/test split on every machine"))


def _policy_for_preset(preset_key: str) -> None:
    """Choosing a preset sets its gate policy (adaptive for "recommended"); the person may still change it."""
    st.session_state["policy"] = default_policy(st.session_state[preset_key])


with tab_new:
    seed = 0
    errors: list[str] = []
    task = None
    data = None
    st.subheader("1 · Task")
    explain("splits")
    source = st.radio("Data", ["Built-in task", "Upload CSV/JSONL"], horizontal=True, key="task_source")
    task_spec: dict = {}
    if source == "Built-in task":
        infos = {t.name: t for t in H.task_infos()}
        name = st.selectbox("Task", list(infos), format_func=lambda n: infos[n].title, key="task_name")
        info = infos[name]
        st.caption(f"{md_escape(info.description)}  \nLabels: {md_escape(', '.join(info.labels))} · default sizes "
                   f"train {info.sizes['train']}, validation {info.sizes['val']}, test {info.sizes['test']}"
                   f"{', confirmation ' + str(info.sizes['confirmation']) if 'confirmation' in info.sizes else ''}  \n"
                   f"Source: {md_escape(info.source)}")
        c = st.columns(4)
        seed = split_seed(c[3])
        val_size = c[0].number_input("Validation questions", min_value=1, value=info.sizes["val"], step=5,
                                     key=f"val_size_{name}", help="the gate scores every accepted prompt on these")
        train_size = c[1].number_input("Training questions", min_value=0, value=0, step=50,
                                       key=f"train_size_{name}",
                                       help="minibatches and bandit samples come from here; 0 = all the rest")
        test_size = c[2].number_input("Test questions", min_value=0, value=0, step=50,
                                      key=f"test_size_{name}", help="held out for the Evaluate page; 0 = all")
        try:
            task = H.builtin_task(name, int(seed), int(val_size), int(train_size) or None, int(test_size) or None)
            task_spec = builtin_spec(name, int(seed), val_size=int(val_size), train_size=int(train_size) or None,
                                     test_size=int(test_size) or None)
        except TaskError as exc:
            st.error(md_escape(exc), icon=":material/error:")
            errors.append("task")
    else:
        def _upload_changed() -> None:  # removed by the person (not merely gone with a page switch): forget it
            if st.session_state.get("upload") is None:
                st.session_state.pop(H.UPLOAD_KEPT, None)

        up = st.file_uploader("CSV, TSV, JSONL or JSON file", type=["csv", "tsv", "jsonl", "json", "txt"],
                              key="upload", on_change=_upload_changed)
        if up is not None:  # kept for when the person visits another page and comes back
            st.session_state[H.UPLOAD_KEPT] = (up.name, up.getvalue(), up.file_id)
        kept = st.session_state.get(H.UPLOAD_KEPT)
        if kept is None:
            st.caption("One row per question: input column(s), a label column, optionally an id and an options column.")
            errors.append("no file")
        else:
            up_name, content, file_id = kept
            if up is None:
                kc = st.columns([4, 1], vertical_alignment="center")
                kc[0].caption(f":material/description: Using **{md_escape(up_name)}** ({len(content) / 1024:.0f} KB), "
                              "uploaded earlier; upload another file to replace it.")
                kc[1].button("Forget the file", key="forget_upload",
                             on_click=lambda: st.session_state.pop(H.UPLOAD_KEPT, None))
            tabular = not up_name.lower().endswith((".json", ".jsonl"))
            header = True
            if tabular:
                guess = H.header_guess(content, up_name)
                header = st.toggle("First row is a header", value=guess, key=f"has_header_{file_id}",
                                   help="off: row 1 is data and the columns are numbered 1, 2, 3, ...")
                st.caption(f"Guess: row 1 looks like {'column names' if guess else 'data, not column names'}.")
            try:
                df = H.table(content, up_name, header)
            except TaskError as exc:
                st.error(md_escape(exc), icon=":material/error:")
                errors.append("file")
                df = None
            if df is not None:
                st.caption(f"{len(df):,} rows · {md_escape(df.attrs['format'].describe())} · preview of the first 20")
                head = df.head(20)
                head.attrs = {}  # row numbers and format are not table content
                st.dataframe(head, hide_index=True, height=240)
                cols = list(df.columns)
                g = H.guess_columns(cols)
                k = "" if header else "_nh"  # the columns change with the header switch
                # the column chips get the page's full width: long column names stay readable
                inputs = st.multiselect("Input column(s)", cols, default=g["inputs"], key=f"map_inputs{k}")
                c = st.columns(3)
                label = c[0].selectbox("Label column", cols, index=cols.index(g["label"]) if g["label"] in cols else 0,
                                       key=f"map_label{k}")
                none = "(none)"
                id_col = c[1].selectbox("Id column", [none] + cols, index=([none] + cols).index(g["id"] or none),
                                        key=f"map_id{k}")
                choices = c[2].selectbox("Options column (MCQ)", [none] + cols,
                                         index=([none] + cols).index(g["choices"] or none), key=f"map_choices{k}",
                                         help="one cell holding all options: JSON object, JSON list or 'A: … | B: …'")
                option_cols = st.multiselect("Option columns (MCQ, one per option)", cols, key=f"map_option_cols{k}",
                                             help="lettered A, B, C, … in the order chosen; the label column "
                                                  "holds the letter (or the option's text)")
                c = st.columns([1, 1, 2])
                use_threshold = c[0].checkbox("Threshold scores", key="map_use_threshold",
                                              help="numeric labels (e.g. scores 0–1) become two classes")
                threshold = c[1].number_input("Threshold scores at", value=0.5, step=0.05, key="map_threshold",
                                              disabled=not use_threshold, help="below → first class, at or above → second")
                c = st.columns(4)
                seed = split_seed(c[3])
                labels_txt = c[0].text_input("Allowed labels", key="map_labels", placeholder="e.g. yes, no, maybe",
                                             help="optional, comma-separated; empty = the labels found in the file")
                val_size = c[1].number_input("Validation questions", min_value=1, value=min(50, max(1, len(df) // 4)),
                                             key="custom_val")
                test_size = c[2].number_input("Test questions", min_value=0, value=min(100, max(0, len(df) // 4)),
                                              key="custom_test")
                labels = tuple(x.strip() for x in labels_txt.split(",") if x.strip()) or None
                inputs = [x for x in inputs if x not in option_cols]
                try:
                    task = H.custom_task(content, up_name, tuple(inputs), label, None if id_col == none else id_col,
                                         None if choices == none else choices, labels, int(val_size), int(test_size),
                                         int(seed), header, tuple(option_cols),
                                         float(threshold) if use_threshold else None)
                    data = (up_name, content)
                    task_spec = {"file": up_name, "input_cols": list(inputs), "label_col": label,
                                 "id_col": None if id_col == none else id_col,
                                 "choices_col": None if choices == none else choices,
                                 "labels": list(labels) if labels else None, "val_size": int(val_size),
                                 "test_size": int(test_size), "seed": int(seed)}
                    if not header:
                        task_spec["header"] = False
                    if option_cols:
                        task_spec["option_cols"] = list(option_cols)
                    if use_threshold:
                        task_spec["label_threshold"] = float(threshold)
                    for note in task.notices:
                        st.info(md_escape(note), icon=":material/info:")
                except TaskError as exc:
                    st.error(md_escape(exc), icon=":material/error:")
                    errors.append("mapping")
    if task is not None:
        sizes = {k: len(v) for k, v in task.splits.items()}
        st.success(f"{md_escape(task.title)}: train {sizes['train']}, validation {sizes['val']}, test {sizes['test']} · "
                   f"labels {md_escape(', '.join(task.labels))}", icon=":material/check_circle:")
        with st.expander("Preview validation questions and the question template"):
            st.caption("The user message the forward model sees for the first validation question, exactly as sent "
                       "(the prompt you tune is the system message):")
            plain(H.question_preview(task), box=True)
            st.caption("The template every question fills:")
            plain(task.template, box=True)
            rows = [{"id": e.id, "question": " · ".join(e.inputs.values())[:500], "gold": e.label}
                    for e in task.split("val")[:25]]
            st.dataframe(pd.DataFrame(rows), hide_index=True)

    st.subheader("2 · Models")
    explain("models")
    st.caption("Spec = provider:model — `openai:gpt-4o-mini`, `anthropic:claude-3-5-haiku-latest`, "
               "`ollama:llama3.2`, or `openai-compatible:<model>` with a base URL (vLLM, llama.cpp, LM Studio).")
    st.caption(H.anthropic_note())
    picks = H.known_specs()

    def _pick(which: str) -> None:
        choice = st.session_state.get(f"{which}_pick")
        if choice:
            spec, _, url = choice.partition(" @ ")
            st.session_state[f"{which}_spec"] = spec
            st.session_state[f"{which}_url"] = url

    default_fwd, default_bwd = "openai:gpt-4o-mini", "openai:gpt-4o"
    if not state.key_source("openai") and state.key_source("anthropic"):
        default_fwd, default_bwd = "anthropic:claude-3-5-haiku-latest", "anthropic:claude-sonnet-4-0"
    elif not state.key_source("openai") and state.probed():
        first = next(iter(state.probed().items()))
        if first[1]:
            default_fwd = default_bwd = H.spec_for(first[0], first[1][0])[0]
    state.ss("forward_spec", default_fwd)
    state.ss("backward_spec", default_bwd)
    mc = st.columns(2)
    specs = {}
    for col, which, title, help_ in (
            (mc[0], "forward", "Forward model (answers the questions)", "runs the prompt under optimisation, temperature 0 (OpenAI-protocol models; see the note above for Anthropic)"),
            (mc[1], "backward", "Backward model (writes gradients and edits)", "the optimiser: critiques and rewrites")):
        with col:
            st.markdown(f"**{title}**")
            st.selectbox("Quick pick", [None] + picks, key=f"{which}_pick", on_change=_pick, args=(which,),
                         format_func=lambda x: "— choose to fill in —" if x is None else x)
            spec = st.text_input("Spec", key=f"{which}_spec", help=help_, on_change=saved_settings.save_now)
            url = st.text_input("Base URL (compatible servers only)", key=f"{which}_url",
                                placeholder="http://localhost:11434/v1", on_change=saved_settings.save_now)
            try:
                ms = parse_spec(spec, url or None)
                price = state.model_price(ms)
                st.caption((f"price: ${price[0]:.2f} in / ${price[1]:.2f} out per 1M tokens" if price else
                            "price: unknown (cost shows as $0; set one in Settings)")
                           + " · " + H.timeout_caption(spec, url or None))
            except LLMError as exc:
                st.error(md_escape(for_surface(str(exc), "app")), icon=":material/error:")
                errors.append(which)
            specs[which] = (spec.strip(), (url or "").strip() or None)
    mc = st.columns(2)
    tc = mc[1].columns(2)
    H.timeout_control(tc[0], "setup_timeout")
    tc[1].caption("The same control as Settings → Calls → Timeout per call; kept for your next visit.")
    fwd_max_tokens = int(mc[0].number_input(
        "Max tokens per answer", min_value=8, max_value=8192, value=512, step=64, key="forward_max_tokens",
        help="output-token limit of each forward answer; small local models answer faster with 64–128"))

    st.subheader("3 · Method")
    explain("method")
    method = st.radio("Method", METHODS, horizontal=True, key="method", index=METHODS.index("textgrad"),
                      format_func={"textgrad": "AutoMedPrompt / TextGrad", "protegi": "ProTeGi"}.get)
    presets = list(PRESETS[method])
    st.session_state.setdefault(f"preset_{method}", DEFAULT_PRESET)  # the product's preset: the adaptive gate
    st.session_state.setdefault("policy", default_policy(DEFAULT_PRESET))
    preset = st.selectbox("Preset", presets, key=f"preset_{method}", on_change=_policy_for_preset,
                          args=(f"preset_{method}",), help="\"recommended\" starts with the adaptive gate")
    with st.expander("All settings of this preset"):
        st.dataframe(H.preset_rows(method, preset, task), hide_index=True,
                     column_config={"setting": st.column_config.TextColumn(width="small"),
                                    "value": st.column_config.TextColumn(width="large")})
    params = H.preset_params(method, preset, key=f"p_{method}_{preset}", task=task)
    if method == "textgrad":
        base_constraints = PRESETS[method][preset].constraints
        ctext = st.text_area("Constraints for the update (one per line)", value="\n".join(base_constraints),
                             key=f"constraints_{preset}", height=90,
                             help="e.g. 'Keep the prompt under 120 words.' — sent to every TGD update")
        constraints = [x.strip() for x in ctext.splitlines() if x.strip()]
        if constraints != list(base_constraints):
            params["constraints"] = constraints

    st.subheader("4 · Seed prompt")
    state.ss("seed_prompt", SEED_PROMPT)
    sc = st.columns([2, 1, 1], vertical_alignment="bottom")
    strategy = sc[0].selectbox("Start from", ["AutoMedPrompt seed", "zero-shot", "cot", "few-shot"], key="seed_strategy",
                               help="the baselines the AutoMedPrompt paper compares against")
    k = sc[1].number_input("K (few-shot)", min_value=1, max_value=20, value=3, key="seed_k")

    def _use_seed() -> None:
        strat = st.session_state["seed_strategy"]
        if strat == "AutoMedPrompt seed" or task is None:
            st.session_state["seed_prompt"] = SEED_PROMPT
        else:
            name_ = f"few-shot:{st.session_state['seed_k']}" if strat == "few-shot" else strat
            st.session_state["seed_prompt"] = strategy_prompt(name_, task, seed=int(st.session_state.get("split_seed", 0)))

    sc[2].button("Use as seed", on_click=_use_seed, key="use_seed", width="stretch")
    seed_prompt = st.text_area("Seed prompt (the system prompt to improve)", key="seed_prompt", height=140)

    st.subheader("5 · Gate and budget")
    gc = st.columns(4)
    policy = gc[0].selectbox("Gate policy", POLICIES, key="policy", help="how validation decides a step")
    alpha = gc[1].number_input("alpha (significant)", min_value=0.001, max_value=0.5, value=0.05, step=0.01,
                               key="alpha", disabled=policy != "significant")
    patience = gc[2].number_input("Patience (auto-run)", min_value=1, max_value=50, value=3, key="patience",
                                  help="auto-run stops after this many rejections in a row")
    budget_kind = gc[3].selectbox("Budget", ["none", "USD", "calls"], key="budget_kind")
    budget_usd = budget_calls = None
    if budget_kind == "USD":
        budget_usd = st.number_input("Budget in USD", min_value=0.0, value=5.0, step=1.0, key="budget_usd")
    elif budget_kind == "calls":
        budget_calls = int(st.number_input("Budget in calls", min_value=1, value=2000, step=100, key="budget_calls"))
    gate_batch, gate_cap = 50, 200
    if policy == "adaptive":
        ac = st.columns(4)
        gate_batch = int(ac[0].number_input("Questions per look", min_value=1, max_value=1000, value=50, step=10,
                                            key="gate_batch", help="the adaptive gate scores this many, then looks"))
        gate_cap = int(ac[1].number_input("At most (cap)", min_value=1, max_value=100_000, value=200, step=50,
                                          key="gate_cap", help="or all the task's validation questions, if fewer"))
    st.caption(md_escape(POLICY_HELP[policy]))
    ahead = {"local servers only": None, "always": True, "never": False}
    validate_ahead = ahead[st.radio("Validate candidates ahead (in the background, while you read them)", list(ahead),
                                    key="validate_ahead_choice", horizontal=True,
                                    help="the accepted candidate's gate is then ready at once; it pays for every "
                                         "candidate's validation, so it is on by default only for local servers")]
    title = st.text_input("Title (optional)", key="session_title", placeholder="e.g. PubMedQA, textgrad, first try")

    cfg = SessionConfig(task=task_spec, method=method, preset=preset, forward=specs["forward"][0],
                        backward=specs["backward"][0], forward_base_url=specs["forward"][1],
                        backward_base_url=specs["backward"][1], seed_prompt=seed_prompt, seed=int(seed),
                        policy=policy, alpha=float(alpha), patience=int(patience), budget_usd=budget_usd,
                        budget_calls=budget_calls, forward_max_tokens=fwd_max_tokens, params=params,
                        gate_batch=gate_batch, gate_cap=max(gate_cap, gate_batch),
                        templates=dict(state.ss("template_overrides", {})), title=title.strip(),
                        validate_ahead=validate_ahead)
    st.subheader("6 · Estimate and create")
    if task is not None and not errors:
        try:
            cfg.check()
            if budget_usd is not None and state.unpriced(cfg):  # its calls would count as $0: refused before any
                st.error(f"No price is known for {md_escape(', '.join(state.unpriced(cfg)))}, so a USD budget "
                         "cannot be kept: set its price in Settings (Prices), or choose another budget.",
                         icon=":material/payments:")
                errors.append("price")
            priced = replace(cfg, prices=cfg.snapshot_prices(state.price_overrides()))  # this browser's prices
            est = estimate(priced, task, cached=state.response_cache() is not None)
            b, s1 = est["baseline"], est["step"]
            ec = st.columns(5)
            ec[0].metric("Baseline calls", f"{b['calls']:,}", help="the seed prompt on every validation question")
            ec[1].metric("Baseline cost", money(b["cost_usd"]))
            ec[2].metric("One step: calls", f"{s1['proposal']:,}",
                         help=f"before you decide: minibatch {s1['forward']}, optimiser {s1['optimiser']}, "
                              f"bandit {s1['bandit']}")
            ec[3].metric("Then validation: calls", f"{s1['validation']:,}",
                         help="the chosen prompt on the validation questions (the current prompt's answers are cached)")
            ec[4].metric("One step: cost", money(s1["cost_usd"]), help="with its validation")
            st.caption("Estimates assume about 150 output tokens per answer; cached calls cost nothing."
                       + (f" No price is known for {md_escape(', '.join(state.unpriced(cfg)))}: its cost counts as "
                          "$0 (set a price in Settings)." if state.unpriced(cfg) else ""))
        except SessionError as exc:
            st.error(md_escape(exc), icon=":material/error:")
            errors.append("config")
    missing = state.missing_for(cfg) if not errors else []
    if errors:
        st.caption("The estimate and the Create button wait for a data file: upload one above."
                   if errors == ["no file"] else
                   "The estimate and the Create button wait until what is marked in red above is fixed.")
    if missing:
        st.warning("Before creating: " + md_escape("; ".join(missing)) + ".", icon=":material/key:")
    if st.button("Create session and score the seed prompt", type="primary", key="create_session",
                 disabled=bool(errors or missing)):
        try:
            s = Session.create(cfg, root=state.sessions_root(), data=data, price_overrides=state.price_overrides())
        except SessionError as exc:
            st.error(md_escape(exc), icon=":material/error:")
        else:
            registry().add_session(s)
            state.set_current(s.id)
            actions.start_baseline(s)
            st.switch_page("pages/optimize.py")

H.remember_setup_form()  # before any switch_page below: the form as drawn in this run

# ------------------------------------------------------------------ sessions
with tab_sessions:
    rows = list_sessions(state.sessions_root())
    if not rows:
        st.info("No session yet — create one in the first tab, or import a bundle.", icon=":material/info:")
    else:
        st.dataframe(H.sessions_frame(rows), hide_index=True, width="stretch", column_config=H.SESSION_COLUMNS)
        ids = [r["id"] for r in rows]
        cur = state.current_sid()
        pick = st.selectbox("Session", ids, index=ids.index(cur) if cur in ids else 0, key="manage_pick")
        b = st.columns([1, 1, 1, 2], vertical_alignment="center")
        if b[0].button("Open", key="open_session", type="primary"):
            state.set_current(pick)
            st.switch_page("pages/optimize.py")
        if b[1].button("Close", key="close_session",
                       help="release this app's write lock, e.g. to resume the session with the pgs CLI"):
            try:
                registry().close_session(state.sessions_root(), pick)
                if state.current_sid() == pick:
                    state.set_current(None)
                st.success(f"Closed {pick}; it opens again when you select it.", icon=":material/check_circle:")
            except JobBusy as exc:
                st.warning(md_escape(exc), icon=":material/hourglass_top:")
        confirm = b[3].checkbox("Yes, delete it for good", key="confirm_delete")
        if b[2].button("Delete", key="delete_session", disabled=not confirm):
            try:
                registry().close_session(state.sessions_root(), pick)
                delete_session(pick, root=state.sessions_root())
                if state.current_sid() == pick:
                    state.set_current(None)
                st.session_state["confirm_delete"] = False
                st.rerun()
            except (SessionError, JobBusy, OSError) as exc:
                st.error(f"Cannot delete {pick}: {md_escape(exc)}", icon=":material/error:")

# ------------------------------------------------------------------ import
with tab_import:
    st.caption("A bundle is one JSON file with a session's events and every model response it used: it can be "
               "browsed and replayed here with no key.")
    if bundle is None:
        st.info("Bundle import is not available in this build (core.bundle is missing).", icon=":material/info:")
    else:
        up = st.file_uploader("Session bundle (.json)", type=["json"], key="bundle_upload")
        if up is not None:
            c = st.columns(2)
            if c[0].button("Import and open", type="primary", key="import_bundle"):
                try:
                    sid = bundle.import_bundle(up.getvalue(), root=state.sessions_root(), cache=state.response_cache())
                except bundle.BundleError as exc:
                    st.error(f"Cannot import this bundle: {md_escape(exc)}", icon=":material/error:")
                else:
                    state.ss("imported", set()).add(sid)
                    registry().imported.add(session_key(state.sessions_root(), sid))
                    state.set_current(sid)
                    st.success(f"Imported as session {sid}.", icon=":material/check_circle:")
                    st.switch_page("pages/history.py")
            if c[1].button("Check replay (offline)", key="replay_bundle",
                           help="re-runs the recorded session from the bundle's own responses, with no network"):
                try:
                    with st.spinner("Replaying offline…"):
                        res = bundle.replay_bundle(up.getvalue())
                except bundle.BundleError as exc:
                    st.error(f"Cannot replay this bundle: {md_escape(exc)}", icon=":material/error:")
                else:
                    (st.success if res.matches else st.warning)(
                        f"Replay of session {md_escape(res.session)}: {'matches the recording' if res.matches else 'differs'} · "
                        f"baseline {res.baseline[0]:.1%} recorded, {res.baseline[1]:.1%} replayed · "
                        f"{res.misses} response(s) missing from the bundle.")
                    if res.first_difference:
                        st.warning(f"First difference: {md_escape(res.first_difference)}")
                    if res.steps:
                        st.dataframe(replay_table(res.steps), hide_index=True)
