"""Settings stay (issue 11 item 6) and the Setup/Settings/Overview nits (item 12), through AppTest.

A new AppTest is a new browser session (a reload or a new tab): what it sees came from the settings file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.llm import RetryNotice
from core.runner import Progress
from core.session import Session, SessionConfig
from core.settings_file import ProviderSettings, load, save, settings_path
from ui.jobs import Job, _progress_text
from ui.status import phase_label

APP = str(Path(__file__).resolve().parent.parent / "app.py")
KEY = "sk-typed-in-settings-4f9a8b7c6d5e"
CSV = ("question_text_with_a_long_name,supporting_context_paragraph,final_answer_label\n"
       + "".join(f"is {i} even?,numbers,{'yes' if i % 2 == 0 else 'no'}\n" for i in range(40))).encode()


@pytest.fixture
def env(app_test_env):
    return app_test_env


def new_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    return check(at)


def check(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def goto(at: AppTest, page: str) -> AppTest:
    return check(at.switch_page(f"pages/{page}.py").run())


def shown(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "success", "text")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def test_the_settings_file_sits_beside_the_sessions_folder(env):
    assert settings_path() == env / "settings.json"


def test_timeout_and_models_survive_a_new_browser_session_and_one_control_serves_both_pages(env):
    at = goto(new_app(), "settings")
    at.number_input(key="opt_timeout").set_value(900.0)
    check(at.run())
    at = goto(at, "setup")
    assert at.number_input(key="setup_timeout").value == 900.0  # the same value on Setup
    at.text_input(key="forward_spec").set_value("openai-compatible:qwen-local")
    at.text_input(key="forward_url").set_value("http://127.0.0.1:8088/v1")
    check(at.run())
    saved = json.loads((env / "settings.json").read_text())
    assert saved["timeout_s"] == 900.0 and saved["forward_spec"] == "openai-compatible:qwen-local"
    assert saved["forward_url"] == "http://127.0.0.1:8088/v1"

    fresh = goto(new_app(), "setup")  # a reload / a new tab
    assert fresh.number_input(key="setup_timeout").value == 900.0
    assert fresh.text_input(key="forward_spec").value == "openai-compatible:qwen-local"
    assert fresh.text_input(key="forward_url").value == "http://127.0.0.1:8088/v1"
    assert "timeout: 900 s per call" in shown(fresh)
    fresh = goto(fresh, "settings")
    assert fresh.number_input(key="opt_timeout").value == 900.0


def test_setup_shows_the_timeout_chosen_for_each_server(env):
    at = goto(new_app(), "setup")
    at.text_input(key="forward_spec").set_value("openai-compatible:m")
    at.text_input(key="forward_url").set_value("http://127.0.0.1:8088/v1")
    at.text_input(key="backward_spec").set_value("openai:gpt-4o")
    check(at.run())
    text = shown(at)
    assert "timeout: 600 s per call (a local or compatible server" in text
    assert "timeout: 60 s per call (a hosted API" in text


def test_a_key_typed_in_settings_never_reaches_the_settings_file(env):
    at = goto(new_app(), "settings")
    at.text_input(key="key_openai").set_value(KEY)
    check(at.run())
    assert "entered in Settings" in shown(at)  # the key is in use
    at.number_input(key="opt_retries").set_value(2)  # a change that writes the file
    check(at.run())
    at = goto(at, "setup")
    at.text_input(key="backward_url").set_value(KEY)  # even typed into a saved field by mistake
    check(at.run())
    text = (env / "settings.json").read_text()
    assert json.loads(text)["max_retries"] == 2
    assert KEY not in text and KEY[8:20] not in text


def test_save_refuses_secrets_and_key_shaped_values(tmp_path):
    path = tmp_path / "settings.json"
    save(ProviderSettings(forward_spec="openai:gpt-4o", forward_url="http://h/v1?k=sk-abcdefghijklmnop",
                          backward_url="http://h/secretvalue123"), path, secrets=["secretvalue123"])
    back = load(path)
    assert back.forward_spec == "openai:gpt-4o" and back.forward_url == "" and back.backward_url == ""
    assert "sk-abcdefghijklmnop" not in path.read_text() and "secretvalue123" not in path.read_text()
    assert not list(tmp_path.glob(".settings-*"))  # nothing half-written left behind
    path.write_text("{not json")
    assert load(path) == ProviderSettings()  # a broken file gives the defaults, never a traceback


def test_setup_keeps_what_was_typed_and_uploaded_across_pages(env):
    at = goto(new_app(), "setup")
    at.text_input(key="session_title").set_value("kept title")
    at.text_area(key="seed_prompt").set_value("Answer yes or no. Kept.")
    at.number_input(key="val_size_pubmedqa").set_value(15)
    check(at.run())
    at.radio(key="task_source").set_value("Upload CSV/JSONL")
    check(at.run())
    at.file_uploader(key="upload").set_value(("kept.csv", CSV, "text/csv"))
    check(at.run())
    at.multiselect(key="map_inputs").set_value(["question_text_with_a_long_name"])
    check(at.run())
    at = goto(goto(at, "overview"), "settings")
    at = goto(at, "setup")
    assert at.radio(key="task_source").value == "Upload CSV/JSONL"
    assert at.text_input(key="session_title").value == "kept title"
    assert at.text_area(key="seed_prompt").value == "Answer yes or no. Kept."
    assert at.multiselect(key="map_inputs").value == ["question_text_with_a_long_name"]
    assert "kept\\.csv: train 20, validation 10" in shown(at)  # the file is still the task
    assert not at.warning or all("default value" not in w.value for w in at.warning)
    at.radio(key="task_source").set_value("Built-in task")
    check(at.run())
    assert at.number_input(key="val_size_pubmedqa").value == 15
    at.radio(key="task_source").set_value("Upload CSV/JSONL")
    check(at.run())
    # the uploader itself was not drawn meanwhile, so it is empty: the kept file is used, and says so
    assert "Using **kept\\.csv**" in shown(at) and "kept\\.csv: train 20" in shown(at)
    at.button(key="forget_upload").click()
    check(at.run())
    assert "_setup_upload" not in at.session_state and "kept\\.csv" not in shown(at)


def test_app_messages_name_the_apps_controls_not_cli_flags(env):
    at = goto(new_app(), "setup")
    at.text_input(key="forward_spec").set_value("openai-compatible:m")
    at.text_input(key="forward_url").set_value("")
    check(at.run())
    errors = " ".join(e.value for e in at.error)
    assert "base URL" in errors and "Setup → Models" in errors
    for flag in ("--base-url", "OPENAI_BASE_URL", "--timeout", "--concurrency"):
        assert flag not in shown(at), flag


def test_the_preset_table_fills_in_the_task(env):
    at = goto(new_app(), "setup")
    at.radio(key="method").set_value("textgrad")
    check(at.run())
    for preset in ("quick", "recommended"):
        at.selectbox(key="preset_textgrad").set_value(preset)
        check(at.run())
        table = next(d.value for d in at.dataframe if "setting" in d.value.columns)
        role = table.loc[table["setting"] == "role", "value"].iloc[0]
        assert "{task}" not in role and ("PubMedQA" in role or "yes/no/maybe" in role), role
        assert not any(table["setting"].str.endswith("_by_task"))


def _make_sessions(root: Path, n: int) -> list[str]:
    ids = []
    for i in range(n):
        cfg = SessionConfig(task={"name": "pubmedqa", "val_size": 10}, method="textgrad", preset="quick",
                            forward="fake:scripted", backward="fake:scripted", title=f"try {i}")
        s = Session.create(cfg, root=root)
        ids.append(s.id)
        s.close()
    return ids


def test_overview_lists_the_sessions_on_disk_with_every_column(env):
    ids = _make_sessions(env / "sessions", 4)
    at = new_app()
    heads = [h.value for h in at.subheader]
    assert "No session yet" not in heads and "4 sessions on disk — none open" in heads
    table = at.dataframe[0].value
    assert list(table.columns) == ["id", "created", "task", "method", "title", "size"]
    assert sorted(table["id"]) == sorted(ids) and set(table["title"]) == {f"try {i}" for i in range(4)}
    at.selectbox(key="overview_pick").set_value(ids[2])
    at.button(key="overview_open").click()
    check(at.run())
    assert at.session_state["sid"] == ids[2] and f"Session {ids[2]}" in [h.value for h in at.subheader]


def test_the_status_line_names_phases_in_words_and_shows_the_retry_in_progress():
    job = Job("j1", "step", "Step 1: minibatch and proposal", "root::sid")
    job.on_progress("protegi.gradient", Progress(done=1, total=3))
    job.on_retry(RetryNotice(2, 4, 8.0, "rate limited (HTTP 429)", "http://127.0.0.1:8088/v1", "protegi.gradient"))
    line = _progress_text(job)
    assert "protegi.gradient" not in line and "phase: gradients (why the prompt failed)" in line
    assert "rate limited (HTTP 429) — retrying in 8 s, attempt 2 of 4" in line
    job.on_progress("protegi.gradient", Progress(done=2, total=3))  # a call finished: the retry is over
    assert "retrying" not in _progress_text(job)
    assert phase_label("textgrad.update") == "prompt update" and phase_label("someone.new_phase") == "new phase"
