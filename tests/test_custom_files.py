"""Custom files people actually have: headerless CSV/TSV, odd delimiters, numbers as labels, scores,
free-text columns, multiple choice as JSON options or one column per option, odd encodings.

Each case loads through the library and through `pgs evaluate --task file ...` (in-process, with the
scripted fake model taught the task's questions, so its answers are parsed like a real model's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from core import cli
from core.evaluate import forward_request
from core.tasks import TaskError, load_custom, load_task_from_path
from tests.conftest import pgs_cmd
from tests.fake_model import FakeModel, learn_task

pytestmark = pytest.mark.timeout(120)

PROMPT = "Answer carefully."


def pgs_evaluate(capsys, path, *args: str) -> tuple[int, dict | None, str]:
    """`pgs evaluate --task path ...` in-process: (exit code, the JSON summary or None, stderr)."""
    code = cli.main(["evaluate", "--task", str(path), "--model", "fake:scripted", "--prompt", PROMPT,
                     "--json", "--quiet", *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def expected_accuracy(task, split: str = "val") -> tuple[float, int]:
    """(accuracy over parsed+unparsed answers, unparsed count) the fake model gives, parsed by the task."""
    fake = FakeModel()
    exs = task.split(split)
    parsed = [task.parse(fake.forward(PROMPT, forward_request(PROMPT, task, ex).messages[-1][1]), ex) for ex in exs]
    return sum(p == ex.label for p, ex in zip(parsed, exs)) / len(exs), sum(p is None for p in parsed)


def mcq_rows(n: int = 24) -> list[list[str]]:
    return [[f"Which organ filters blood {i}?", f"heart {i}", f"kidney {i}", f"lung {i}", f"skin {i}", "ABCD"[i % 4]]
            for i in range(n)]


# ---------------------------------------------------------------- headerless files and delimiters


def test_headerless_semicolon_mcq_with_option_columns_library_and_cli(tmp_path, pgs_env, capsys):
    path = tmp_path / "quiz.csv"
    path.write_text("\n".join(";".join(r) for r in mcq_rows()) + "\n", encoding="utf-8")
    task = load_task_from_path(str(path), input_cols=["1"], option_cols=["2", "3", "4", "5"], label_col="6",
                               header=False, val_size=6, test_size=6)
    assert task.labels == ["A", "B", "C", "D"]
    assert task.file_format == "semicolon-separated, no header row (columns numbered from 1), UTF-8"
    assert sorted(e.id for s in task.splits.values() for e in s)[:2] == ["row-1", "row-10"]  # row 1 is data
    ex = next(e for s in task.splits.values() for e in s if e.id == "row-3")
    assert ex.label == "C" and ex.inputs == {"1": "Which organ filters blood 2?"}
    assert ex.choices == {"A": "heart 2", "B": "kidney 2", "C": "lung 2", "D": "skin 2"}
    assert task.render(ex) == ("1:\nWhich organ filters blood 2?\n\nOptions:\nA. heart 2\nB. kidney 2\nC. lung 2\n"
                               "D. skin 2\n\nGive your final answer on the last line as \"Answer: <A|B|C|D>\".")
    assert task.parse("I think it is the lung.\nAnswer: C", ex) == "C"

    learn_task(task)
    code, summary, err = pgs_evaluate(capsys, path, "--no-header", "--input-cols", "1", "--option-cols", "2,3,4,5",
                                      "--label-col", "6", "--val-size", "6", "--test-size", "6")
    assert code == 0, err
    acc, unparsed = expected_accuracy(task)
    assert summary["n"] == 6 and summary["unparsed"] == unparsed and summary["accuracy"] == pytest.approx(acc)
    assert "pgs: quiz.csv: semicolon-separated, no header row (columns numbered from 1), UTF-8" in err
    assert "pgs: note: Options from columns '2' as A, '3' as B, '4' as C, '5' as D." in err


def test_headerless_file_read_with_a_header_says_so(tmp_path, pgs_env, capsys):
    path = tmp_path / "plain.tsv"
    path.write_text("".join(f"claim number {i} is long enough\t{'yes' if i % 2 else 'no'}\n" for i in range(20)))
    with pytest.raises(TaskError) as err:
        load_task_from_path(str(path), input_cols=["text"], label_col="label", val_size=2, test_size=2)
    assert str(err.value) == (
        "Column 'text' is not in plain.tsv; available columns: claim number 0 is long enough, no. Row 1 looks like "
        "data, not column names: load the file without a header (CLI --no-header, app: untick 'First row is a "
        "header') and number the columns from 1.")
    code, _, stderr = pgs_evaluate(capsys, path, "--input-cols", "text", "--label-col", "label")
    assert code == 2 and stderr.count("\n") == 1 and "--no-header" in stderr
    task = load_task_from_path(str(path), input_cols=["1"], label_col="2", header=False, val_size=2, test_size=2)
    assert len([e for s in task.splits.values() for e in s]) == 20 and task.labels == ["no", "yes"]


def test_pipe_delimiter_is_detected_and_shown(tmp_path, pgs_env, capsys):
    path = tmp_path / "pipes.txt"
    path.write_text("statement|verdict\n" + "".join(f"s {i}, with a comma|{'true' if i % 3 else 'false'}\n"
                                                     for i in range(20)))
    task = load_task_from_path(str(path), input_cols=["statement"], label_col="verdict", val_size=4, test_size=4)
    assert task.labels == ["false", "true"] and task.file_format == "pipe-separated, first row is the header, UTF-8"
    assert {e.inputs["statement"] for e in task.split("val")} <= {f"s {i}, with a comma" for i in range(20)}
    learn_task(task)
    code, summary, err = pgs_evaluate(capsys, path, "--input-cols", "statement", "--label-col", "verdict",
                                      "--val-size", "4", "--test-size", "4")
    assert code == 0 and summary["n"] == 4 and "pipe-separated" in err


# ---------------------------------------------------------------- labels


def test_same_number_written_differently_is_one_class(tmp_path, pgs_env, capsys):
    path = tmp_path / "nums.csv"
    path.write_text("text,label\n" + "".join(f"item {i},{['0', '0.0', '1', '1.0'][i % 4]}\n" for i in range(24)))
    task = load_task_from_path(str(path), input_cols=["text"], label_col="label", val_size=4, test_size=4)
    assert task.labels == ["0", "1"]
    assert sorted({e.label for s in task.splits.values() for e in s}) == ["0", "1"]
    note = ("Labels in column 'label' that are the same number written differently became one class: "
            "'0', '0.0' -> '0'; '1', '1.0' -> '1'.")
    assert task.notices == [note]
    learn_task(task)
    code, summary, err = pgs_evaluate(capsys, path, "--input-cols", "text", "--label-col", "label",
                                      "--val-size", "4", "--test-size", "4")
    assert code == 0 and f"pgs: note: {note}" in err


def test_continuous_scores_are_explained_and_thresholded(tmp_path, pgs_env, capsys):
    path = tmp_path / "scores.csv"
    scores = [f"{(i * 37 % 100) / 100:.2f}" for i in range(40)]
    path.write_text("text,score\n" + "".join(f"t{i},{s}\n" for i, s in enumerate(scores)))
    with pytest.raises(TaskError) as err:
        load_task_from_path(str(path), input_cols=["text"], label_col="score", val_size=4, test_size=4)
    assert "look like continuous scores, not class labels" in str(err.value)
    assert "--label-threshold 0.5" in str(err.value)
    task = load_task_from_path(str(path), input_cols=["text"], label_col="score", val_size=4, test_size=4,
                               label_threshold=0.5)
    high = sum(float(s) >= 0.5 for s in scores)
    assert task.labels == ["0", "1"]
    gold = {e.id: e.label for s in task.splits.values() for e in s}
    assert gold == {f"row-{i + 2}": "1" if float(s) >= 0.5 else "0" for i, s in enumerate(scores)}
    assert task.notices == [f"Scores in column 'score' thresholded at 0.5: {40 - high} row(s) below -> '0', "
                            f"{high} at or above -> '1'."]
    named = load_task_from_path(str(path), input_cols=["text"], label_col="score", val_size=4, test_size=4,
                                label_threshold=0.5, labels=["no", "yes"])
    assert named.labels == ["no", "yes"] and {e.label for e in named.split("val")} <= {"no", "yes"}
    learn_task(task)
    code, summary, stderr = pgs_evaluate(capsys, path, "--input-cols", "text", "--label-col", "score",
                                         "--label-threshold", "0.5", "--val-size", "4", "--test-size", "4")
    assert code == 0 and summary["n"] == 4 and "thresholded at 0.5" in stderr
    code, _, stderr = pgs_evaluate(capsys, path, "--input-cols", "text", "--label-col", "score",
                                   "--label-threshold", "2")
    assert code == 2 and "Every score in column 'score' is below the threshold 2" in stderr


def test_free_text_label_column_is_called_free_text(tmp_path):
    rows = [f"note {i},{'Patient' if i % 2 else 'patient'} reports pain number {i}" for i in range(3000)]
    path = tmp_path / "notes.csv"
    path.write_text("id,summary\n" + "\n".join(rows) + "\n")
    with pytest.raises(TaskError) as err:
        load_task_from_path(str(path), input_cols=["id"], label_col="summary")
    assert str(err.value) == ("Column 'summary' has 3,000 distinct values in 3,000 rows: this looks like free text, "
                              "not a label; a label column needs between 2 and 20 distinct values (is it the right "
                              "column?).")


# ---------------------------------------------------------------- multiple choice in JSONL


def test_jsonl_options_dict_with_own_keys_and_list_with_text_answers_are_lettered(tmp_path, pgs_env, capsys):
    keyed = [json.dumps({"q": f"Q{i}?", "opts": {"opa": f"red {i}", "opb": f"blue {i}", "opc": f"green {i}"},
                         "cop": ["opa", "opb", "opc"][i % 3]}) for i in range(18)]
    task = load_custom("\n".join(keyed).encode(), "keyed.jsonl", input_cols=["q"], label_col="cop",
                       choices_col="opts", val_size=3, test_size=3)
    assert task.labels == ["A", "B", "C"]
    ex = next(e for s in task.splits.values() for e in s if e.id == "line-2")
    assert ex.choices == {"A": "red 1", "B": "blue 1", "C": "green 1"} and ex.label == "B"
    assert "Options:\nA. red 1\nB. blue 1\nC. green 1\n\n" in task.render(ex)
    assert task.notices == ["Options in column 'opts' are shown to the model lettered A, B, C, ... and the answers "
                            "in 'cop' are read as those letters."]

    listed = [json.dumps({"question": f"Q{i}?", "choices": [f"yes {i}", f"no {i}", f"maybe {i}"],
                          "answer": [f"yes {i}", f"no {i}", f"maybe {i}"][i % 3]}) for i in range(18)]
    path = tmp_path / "listed.jsonl"
    path.write_text("\n".join(listed))
    task = load_task_from_path(str(path), input_cols=["question"], label_col="answer", choices_col="choices",
                               val_size=3, test_size=3)
    gold = {e.id: e.label for s in task.splits.values() for e in s}
    assert gold == {f"line-{i + 1}": "ABC"[i % 3] for i in range(18)}
    learn_task(task)
    code, summary, err = pgs_evaluate(capsys, path, "--input-cols", "question", "--label-col", "answer",
                                      "--choices-col", "choices", "--val-size", "3", "--test-size", "3")
    acc, unparsed = expected_accuracy(task)
    assert code == 0 and summary["accuracy"] == pytest.approx(acc) and summary["unparsed"] == unparsed
    assert "JSON records, UTF-8" in err


def test_option_columns_errors_are_one_line(tmp_path):
    data = ("q,a,b,c,gold\n" + "".join(f"Q{i},x{i},y{i},{'' if i == 4 else f'z{i}'},{'E' if i == 7 else 'A'}\n"
                                      for i in range(12))).encode()
    with pytest.raises(TaskError, match=r"^1 label\(s\) in column 'gold' are not one of their row's options, the "
                                        r"first at row 9: 'E' \(options A, B, C\)\.$"):
        load_custom(data, "m.csv", input_cols=["q"], option_cols=["a", "b", "c"], label_col="gold", val_size=1,
                    test_size=1)
    with pytest.raises(TaskError, match="either an options column or option columns"):
        load_custom(data, "m.csv", input_cols=["q"], option_cols=["a", "b"], choices_col="c", label_col="gold")
    with pytest.raises(TaskError, match="'a' is mapped twice"):
        load_custom(data, "m.csv", input_cols=["q", "a"], option_cols=["a", "b"], label_col="gold")


# ---------------------------------------------------------------- encodings and sessions


def test_utf16_is_read_and_named_latin1_refused_in_one_line(tmp_path, pgs_env):
    path = tmp_path / "excel.csv"
    path.write_bytes(("text,label\n" + "".join(f"café {i},{'ab'[i % 2]}\n" for i in range(12))).encode("utf-16"))
    out = subprocess.run(pgs_cmd() + ["evaluate", "--task", str(path), "--model", "fake:scripted", "--input-cols",
                                      "text", "--label-col", "label", "--val-size", "2", "--test-size", "2",
                                      "--json", "--quiet"], capture_output=True, text=True, timeout=120,
                         env={**os.environ})
    assert out.returncode == 0, out.stderr
    assert "pgs: excel.csv: comma-separated, first row is the header, UTF-16" in out.stderr
    assert json.loads(out.stdout)["n"] == 2
    path.write_bytes(path.read_bytes().decode("utf-16").encode("latin-1"))
    out = subprocess.run(pgs_cmd() + ["evaluate", "--task", str(path), "--model", "fake:scripted", "--input-cols",
                                      "text", "--label-col", "label"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "not UTF-8 text" in out.stderr


def test_session_keeps_headerless_option_column_mapping(tmp_path):
    from core.session import Session, SessionConfig

    content = "\n".join(",".join(r) for r in mcq_rows()).encode()
    spec = {"input_cols": ["1"], "option_cols": ["2", "3", "4", "5"], "label_col": "6", "header": False,
            "val_size": 4, "test_size": 4}
    cfg = SessionConfig(task=spec, method="textgrad", preset="quick", forward="fake:f", backward="fake:b")
    s = Session.create(cfg, root=tmp_path / "s", data=("quiz.csv", content))
    sid, labels = s.id, s.task.labels
    s.close()
    again = Session.open(sid, root=tmp_path / "s", readonly=True)
    assert labels == again.task.labels == ["A", "B", "C", "D"]
    assert again.task.split("val")[0].choices is not None and len(again.task.split("train")) == 16


# ---------------------------------------------------------------- the app


def test_app_header_switch_guess_option_columns_and_exact_preview(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.test_app import APP, check

    monkeypatch.setenv("PGS_SESSIONS_DIR", str(tmp_path / "sessions"))
    monkeypatch.setenv("PGS_CACHE_DIR", str(tmp_path / "cache"))
    content = "\n".join(";".join(r) for r in mcq_rows(40)).encode()
    at = AppTest.from_file(APP, default_timeout=60)
    check(at.run())
    check(at.switch_page("pages/setup.py").run())
    at.radio(key="task_source").set_value("Upload CSV/JSONL")
    check(at.run())
    at.file_uploader(key="upload").set_value(("quiz.csv", content, "text/csv"))
    check(at.run())
    switch = next(t for t in at.toggle if t.label == "First row is a header")
    assert switch.value is False  # guessed: row 1 is data
    captions = [c.value for c in at.caption]
    assert "Guess: row 1 looks like data, not column names." in captions
    from ui.render import md_escape

    assert any(md_escape("semicolon-separated, no header row (columns numbered from 1), UTF-8") in c for c in captions)
    at.multiselect(key="map_inputs_nh").set_value(["1"])
    at.multiselect(key="map_option_cols_nh").set_value(["2", "3", "4", "5"])
    at.selectbox(key="map_label_nh").set_value("6")
    at.number_input(key="custom_val").set_value(5)
    at.number_input(key="custom_test").set_value(5)
    check(at.run())
    assert not at.error, [e.value for e in at.error]
    task = load_custom(content, "quiz.csv", input_cols=["1"], option_cols=["2", "3", "4", "5"], label_col="6",
                       header=False, val_size=5, test_size=5)
    shown = [c.value for c in at.code]
    assert task.render(task.split("val")[0]) in shown
    assert "Options:\nA. heart" in task.render(task.split("val")[0])
