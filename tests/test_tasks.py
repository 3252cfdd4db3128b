"""Built-in tasks (splits, determinism, leakage, templates) and custom CSV/JSONL loading with validation."""

import json
import time

import pytest

from core import tasks
from core.tasks import (
    BUILTIN_TASKS, Example, Task, TaskError, TaskInfo, list_tasks, load_custom, load_task, load_task_from_path,
    read_table, sample,
)

SIZES = {"pubmedqa": (450, 50, 500), "medqa": (200, 100, 973), "liar": (3581, 100, 461)}  # split version 1


def ids(examples):
    return [e.id for e in examples]


# ---------------------------------------------------------------- built-ins


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_default_split_sizes(name):
    task = load_task(name, split_version=1)
    train, val, test = SIZES[name]
    assert {k: len(v) for k, v in task.splits.items()} == {"train": train, "val": val, "test": test}
    assert task.split("val") is task.splits["val"]


def test_liar_counts_and_ids():
    task = load_task("liar", split_version=2)  # version 3: the same questions per split, in a seeded order
    assert len(task.split("train")) + len(task.split("val")) + len(task.split("confirmation")) == 3681
    assert ids(task.split("test"))[:3] == ["test-0", "test-1", "test-2"]  # file order, as in ProTeGi
    assert all(e.id.startswith("train-") for e in task.split("train") + task.split("val") + task.split("confirmation"))
    assert task.labels == ["No", "Yes"]
    first = load_task("liar", test_size=100, split_version=2).split("test")
    assert ids(first) == [f"test-{i}" for i in range(100)]
    assert sorted(ids(load_task("liar", test_size=100).split("test"))) == sorted(ids(first))  # the same 100


def test_liar_label_mapping_follows_protegi():
    rows = [json.loads(line) for line in (tasks.DATA_DIR / "protegi_liar" / "test.jsonl").open()]
    by_id = {e.id: e for e in load_task("liar").split("test")}
    for i, row in enumerate(rows):
        assert by_id[f"test-{i}"].label == ("Yes" if row["label"] == 1 else "No")
        assert by_id[f"test-{i}"].inputs == {"text": row["text"]}
    assert sum(e.label == "Yes" for e in by_id.values()) == 250


def test_pubmedqa_official_test_split():
    official = set(json.loads((tasks.DATA_DIR / "pubmedqa" / "test_ground_truth.json").read_text()))
    truth = json.loads((tasks.DATA_DIR / "pubmedqa" / "test_ground_truth.json").read_text())
    task = load_task("pubmedqa")
    assert set(ids(task.split("test"))) == official
    assert all(e.label == truth[e.id] for e in task.split("test"))
    assert task.labels == ["yes", "no", "maybe"]


def test_pubmedqa_never_shows_long_answer_or_human_predictions():
    raw = json.loads((tasks.DATA_DIR / "pubmedqa" / "ori_pqal.json").read_text())
    task = load_task("pubmedqa")
    for split in task.splits.values():
        for ex in split:
            assert set(ex.inputs) == {"question", "context"}
            rendered = task.render(ex)
            assert raw[ex.id]["LONG_ANSWER"] not in rendered
            assert raw[ex.id]["QUESTION"] in rendered
            assert "reasoning_required_pred" not in rendered
    ex = task.split("test")[0]
    first_label = raw[ex.id]["LABELS"][0]
    assert f"{first_label}: {raw[ex.id]['CONTEXTS'][0]}" in ex.inputs["context"]


def test_medqa_render_shows_options_not_gold():
    task = load_task("medqa")
    assert task.labels == ["A", "B", "C", "D"]
    for ex in task.split("val") + task.split("train"):
        assert ex.choices is not None and list(ex.choices) == ["A", "B", "C", "D"] and ex.label in ex.choices
        options = "\n".join(f"{k}. {v}" for k, v in ex.choices.items())
        text = task.render(ex)
        # Exactly question + options + instruction: nothing marks the gold option.
        assert text == f"Question: {ex.inputs['question']}\n\nOptions:\n{options}\n\n{task.answer_format()}"
        assert f"Answer: {ex.label}" not in text and "answer_idx" not in text
        assert set(ex.inputs) == {"question"}


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_template_ends_with_answer_instruction(name):
    task = load_task(name)
    fmt = task.answer_format()
    assert fmt == f'Give your final answer on the last line as "Answer: <{"|".join(task.labels)}>".'
    assert task.template.endswith(fmt)
    assert task.render(task.split("test")[0]).endswith(fmt)


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_seeded_determinism_and_no_overlap(name):
    a, b, c = load_task(name, seed=0), load_task(name, seed=0), load_task(name, seed=1)
    for split in ("train", "val", "test"):
        assert ids(a.split(split)) == ids(b.split(split))
    assert ids(a.split("val")) != ids(c.split("val"))
    for t in (a, c):
        sets = [set(ids(t.split(s))) for s in ("train", "val", "test")]
        assert sets[0].isdisjoint(sets[1]) and sets[0].isdisjoint(sets[2]) and sets[1].isdisjoint(sets[2])
        assert sum(len(s) for s in sets) == sum(len(t.split(s)) for s in ("train", "val", "test"))
        for split in t.splits.values():
            assert all(e.label in t.labels for e in split)


@pytest.mark.parametrize(
    "name, val3",
    [
        ("pubmedqa", ["25274085", "26383908", "16361634"]),
        ("medqa", ["786", "853", "605"]),
        ("liar", ["train-3220", "train-3430", "train-2294"]),
    ],
)
def test_seeded_split_is_pinned(name, val3):
    # random.Random(int) over sorted ids is stable across runs, machines and Python versions.
    assert ids(load_task(name, seed=0, split_version=1).split("val"))[:3] == val3


def test_custom_sizes_and_errors():
    t = load_task("pubmedqa", val_size=20, train_size=100, test_size=30, split_version=1)
    assert [len(t.split(s)) for s in ("train", "val", "test")] == [100, 20, 30]
    t = load_task("medqa", val_size=10, train_size=20, split_version=1)
    assert [len(t.split(s)) for s in ("train", "val", "test")] == [20, 10, 1243]
    with pytest.raises(TaskError, match="at most 500"):
        load_task("pubmedqa", val_size=501, split_version=1)
    with pytest.raises(TaskError, match="at most 400"):
        load_task("pubmedqa", val_size=100, train_size=401, split_version=1)
    with pytest.raises(TaskError, match="whole number"):
        load_task("liar", val_size=-1)
    with pytest.raises(TaskError, match="at least one for test"):
        load_task("medqa", val_size=1000, train_size=273, split_version=1)


def test_unknown_task_and_split():
    with pytest.raises(TaskError) as err:
        load_task("squad")
    assert str(err.value) == "Unknown task 'squad'. Built-in tasks: pubmedqa, medqa, liar."
    with pytest.raises(TaskError, match="Unknown split 'dev'"):
        load_task("liar").split("dev")
    assert load_task(" PubMedQA ").name == "pubmedqa"


def test_repeated_loads_are_fast_and_independent():
    load_task("liar")
    start = time.perf_counter()
    for name in BUILTIN_TASKS:
        load_task(name)
    assert (time.perf_counter() - start) / 3 < 0.05
    a = load_task("medqa")
    a.split("val")[0].inputs["question"] = "changed"
    assert load_task("medqa").split("val")[0].inputs["question"] != "changed"


def test_list_tasks():
    infos = list_tasks()
    assert [i.name for i in infos] == list(BUILTIN_TASKS)
    assert all(isinstance(i, TaskInfo) and i.title and i.description and i.source for i in infos)
    assert infos[1].sizes == {"train": 200, "val": 200, "test": 773, "confirmation": 100}  # split version 2


def test_sample_is_seeded():
    exs = [Example(id=str(i), inputs={"q": str(i)}, label="a") for i in range(100)]
    assert ids(sample(exs, 10, 3)) == ids(sample(exs, 10, 3))
    assert ids(sample(exs, 10, 3)) != ids(sample(exs, 10, 4))
    assert len(set(ids(sample(exs, 10, 3)))) == 10
    assert sample(exs, 500, 0) == exs and sample(exs, 0, 0) == []


def test_render_does_not_reinterpret_braces_in_data():
    task = Task("t", "t", "d", ["x", "y"], "Q: {question}\n{context}\nAnswer.", {"train": [], "val": [], "test": []})
    ex = Example(id="1", inputs={"question": "what is {context}?", "context": "C {0} {}"}, label="x")
    assert task.render(ex) == "Q: what is {context}?\nC {0} {}\nAnswer."


# ---------------------------------------------------------------- custom files


def csv_bytes(n=30, header="text,label", row=lambda i: f"review {i},{'pos' if i % 2 else 'neg'}", bom=False):
    body = "\n".join([header] + [row(i) for i in range(n)]) + "\n"
    return (b"\xef\xbb\xbf" if bom else b"") + body.encode("utf-8")


def custom(data, filename="data.csv", **kw):
    kw.setdefault("input_cols", ["text"])
    kw.setdefault("label_col", "label")
    kw.setdefault("val_size", 5)
    kw.setdefault("test_size", 10)
    return load_custom(data, filename, **kw)


def test_custom_csv_happy_path():
    task = custom(csv_bytes())
    assert task.name == "custom:data.csv"
    assert task.labels == ["neg", "pos"]
    assert [len(task.split(s)) for s in ("train", "val", "test")] == [15, 5, 10]
    ex = task.split("train")[0]
    assert task.render(ex) == f"text:\n{ex.inputs['text']}\n\n" + task.answer_format()
    assert task.template.endswith(task.answer_format())
    assert ids(custom(csv_bytes()).split("test")) == ids(task.split("test"))
    assert ids(custom(csv_bytes(), seed=1).split("test")) != ids(task.split("test"))
    all_ids = [i for s in task.splits.values() for i in ids(s)]
    assert len(all_ids) == len(set(all_ids)) == 30 and "row-2" in all_ids  # spreadsheet row numbers


def test_custom_jsonl_with_ids_choices_and_declared_labels():
    lines = [
        json.dumps({"qid": f"q{i}", "question": f"Q{i}?", "options": {"A": "one", "B": "two", "C": "three"},
                    "answer": "ABC"[i % 3]})
        for i in range(20)
    ]
    task = load_custom("\n".join(lines).encode(), "mcq.jsonl", input_cols=["question"], label_col="answer",
                       id_col="qid", choices_col="options", val_size=3, test_size=4)
    assert task.labels == ["A", "B", "C"]
    ex = task.split("test")[0]
    assert ex.id.startswith("q") and ex.choices == {"A": "one", "B": "two", "C": "three"}
    assert "Options:\nA. one\nB. two\nC. three" in task.render(ex)
    assert task.parse("Answer: three", ex) == "C"


def test_custom_pipe_choices_and_case_folded_labels():
    rows = "\n".join(f'"Q{i}","A: red | B: blue","{"ab"[i % 2]}"' for i in range(12))
    task = load_custom(f"q,opts,gold\n{rows}\n".encode(), "x.csv", input_cols=["q"], label_col="gold",
                       choices_col="opts", labels=["A", "B"], val_size=1, test_size=1)
    assert {e.label for s in task.splits.values() for e in s} == {"A", "B"}
    assert task.split("train")[0].choices == {"A": "red", "B": "blue"}


def test_bom_csv_and_semicolon_spreadsheet_export():
    task = custom(csv_bytes(bom=True))
    assert task.labels == ["neg", "pos"]
    data = csv_bytes(header="text;label", row=lambda i: f"r{i};{'yes' if i % 3 else 'no'}", bom=True)
    assert custom(data).labels == ["no", "yes"]
    df = read_table(csv_bytes(bom=True), "d.csv")
    assert list(df.columns) == ["text", "label"]


def test_formula_like_cells_are_kept_as_text():
    data = csv_bytes(n=20, row=lambda i: f"{'=SUM(A1:A9)' if i == 0 else '+1 555' if i == 1 else '@home' if i == 2 else '-x'},{'a' if i % 2 else 'b'}")
    task = custom(data)
    texts = {e.inputs["text"] for s in task.splits.values() for e in s}
    assert {"=SUM(A1:A9)", "+1 555", "@home", "-x"} <= texts


def test_numeric_labels_stay_text_and_utf16_is_read():
    data = csv_bytes(row=lambda i: f"t{i},{i % 2}")
    assert custom(data).labels == ["0", "1"]
    utf16 = "text,label\n" + "\n".join(f"é{i},{i % 2}" for i in range(30))
    assert custom(utf16.encode("utf-16")).labels == ["0", "1"]


def test_latin1_bytes_give_encoding_error():
    data = "text,label\ncafé,a\n".encode("latin-1")
    with pytest.raises(TaskError) as err:
        custom(data)
    msg = str(err.value)
    assert "UTF-8" in msg and "line 2" in msg and "0xe9" in msg


def test_jsonl_bad_line_number():
    data = b'{"text": "a", "label": "x"}\n\n{"text": "b", "label": "y"}\n{"text": "c", label: "x"}\n'
    with pytest.raises(TaskError, match=r"Line 4 of bad.jsonl is not valid JSON"):
        read_table(data, "bad.jsonl")
    with pytest.raises(TaskError, match="Line 1 .* not a JSON object"):
        read_table(b"[1, 2]\n", "bad.jsonl")


@pytest.mark.parametrize("data", [b"", b"   \n\n", b"\xef\xbb\xbf"])
def test_empty_file(data):
    with pytest.raises(TaskError, match="empty"):
        read_table(data, "e.csv")


def test_header_only_and_unsupported_type():
    with pytest.raises(TaskError, match="no data rows"):
        read_table(b"text,label\n", "h.csv")
    with pytest.raises(TaskError, match=r"Unsupported file type '\.xlsx'"):
        read_table(b"PK\x03\x04", "book.xlsx")


def test_size_and_row_limits():
    with pytest.raises(TaskError, match="size limit is 1 MB"):
        read_table(b"a,b\n" + b"x,y\n" * 400_000, "big.csv", max_bytes=2**20)
    with pytest.raises(TaskError, match="more than 100 rows; the limit is 100"):
        read_table(csv_bytes(n=101), "many.csv", max_rows=100)
    assert len(read_table(csv_bytes(n=100), "ok.csv", max_rows=100)) == 100
    jl = b"\n".join(b'{"a": 1}' for _ in range(101))
    with pytest.raises(TaskError, match="more than 100 rows"):
        read_table(jl, "many.jsonl", max_rows=100)


def test_ragged_csv_row_is_reported():
    data = b"text,label\na,b\nc,d,e\n"
    with pytest.raises(TaskError, match="line 3"):
        read_table(data, "r.csv")


def test_duplicate_header_names():
    with pytest.raises(TaskError, match="'text' appears more than once"):
        read_table(b"text,text,label\na,b,c\n", "d.csv")


def test_missing_column_lists_available():
    with pytest.raises(TaskError) as err:
        custom(csv_bytes(), label_col="gold")
    assert str(err.value) == "Column 'gold' is not in data.csv; available columns: text, label."


def test_duplicate_column_mapping():
    with pytest.raises(TaskError, match="'label' is mapped twice"):
        custom(csv_bytes(), input_cols=["text", "label"])
    with pytest.raises(TaskError, match="'text' is mapped twice"):
        custom(csv_bytes(), input_cols=["text", "text"])
    with pytest.raises(TaskError, match="at least one input column"):
        custom(csv_bytes(), input_cols=[])


def test_empty_label_cells():
    data = csv_bytes(row=lambda i: f"t{i},{'' if i in (4, 9) else 'ab'[i % 2]}")
    with pytest.raises(TaskError) as err:
        custom(data)
    assert "Column 'label' has 2 empty cell(s), the first at row 6" in str(err.value)


def test_empty_input_cells():
    data = csv_bytes(row=lambda i: f"{'  ' if i == 3 else f't{i}'},{'ab'[i % 2]}")
    with pytest.raises(TaskError, match=r"Column 'text' has 1 empty cell\(s\), the first at row 5"):
        custom(data)


def test_labels_outside_declared():
    data = csv_bytes(row=lambda i: f"t{i},{['pos', 'neg', 'meh', 'POS'][i % 4]}")
    with pytest.raises(TaskError) as err:
        custom(data, labels=["pos", "neg"])
    assert "outside the declared ones (pos, neg): 'meh'" in str(err.value)
    assert custom(csv_bytes(row=lambda i: f"t{i},{['pos', 'NEG'][i % 2]}"), labels=["pos", "neg"]).labels == ["pos", "neg"]


def test_label_outside_row_choices():
    lines = [json.dumps({"q": f"Q{i}", "o": {"A": "x", "B": "y"}, "a": "C" if i == 7 else "A"}) for i in range(20)]
    with pytest.raises(TaskError, match=r"not one of their row's options, the first at line 8: 'C'"):
        load_custom("\n".join(lines).encode(), "m.jsonl", input_cols=["q"], label_col="a", choices_col="o",
                    val_size=1, test_size=1)
    lines[3] = json.dumps({"q": "Q3", "o": "garbage", "a": "A"})
    with pytest.raises(TaskError, match="Options in column 'o' at line 4"):
        load_custom("\n".join(lines).encode(), "m.jsonl", input_cols=["q"], label_col="a", choices_col="o",
                    val_size=1, test_size=1)


def test_too_many_or_too_few_distinct_labels():
    with pytest.raises(TaskError, match="30 distinct value"):
        custom(csv_bytes(row=lambda i: f"t{i},label{i}"))
    with pytest.raises(TaskError, match="1 distinct value"):
        custom(csv_bytes(row=lambda i: f"t{i},same"))
    with pytest.raises(TaskError, match="differ only in case"):
        custom(csv_bytes(row=lambda i: f"t{i},{['Yes', 'yes', 'no'][i % 3]}"))


def test_too_few_rows_for_splits():
    with pytest.raises(TaskError) as err:
        custom(csv_bytes(n=15))
    assert "has 15 rows, but validation 5 + test 10 + at least 1 training row needs 16" in str(err.value)
    assert len(custom(csv_bytes(n=16)).split("train")) == 1


def test_duplicate_ids():
    data = csv_bytes(header="id,text,label", row=lambda i: f"{'x7' if i in (7, 12) else f'x{i}'},t{i},{'ab'[i % 2]}")
    with pytest.raises(TaskError) as err:
        custom(data, id_col="id")
    assert "Duplicate id 'x7' in column 'id' (row 9 and row 14)" in str(err.value)


def test_never_half_loads():
    bad = csv_bytes(row=lambda i: f"t{i},{'' if i == 29 else 'ab'[i % 2]}")
    with pytest.raises(TaskError):
        custom(bad)


def test_load_task_from_path(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_bytes(csv_bytes(bom=True))
    task = load_task_from_path(str(path), input_cols=["text"], label_col="label", val_size=5, test_size=5)
    assert task.name == "custom:reviews.csv" and len(task.split("train")) == 20
    with pytest.raises(TaskError, match="File not found"):
        load_task_from_path(str(tmp_path / "nope.csv"), input_cols=["text"], label_col="label")


def test_multiple_input_columns_and_json_array():
    records = [{"title": f"T{i}", "body": f"B{i} {{braces}}", "y": "ab"[i % 2]} for i in range(20)]
    task = load_custom(json.dumps(records).encode(), "arr.json", input_cols=["title", "body"], label_col="y",
                       val_size=2, test_size=2)
    ex = task.split("train")[0]
    assert task.render(ex).startswith(f"title:\n{ex.inputs['title']}\n\nbody:\n{ex.inputs['body']}\n\n")
    assert ex.id.startswith("record-")


@pytest.mark.parametrize("name", ["pubmedqa", "medqa", "liar"])
def test_split_version_3_orders_each_split_so_its_first_questions_are_a_fair_sample(name):
    """PubMedQA's official folds list 'yes' first, so in split version 2 the first 20 validation questions
    (what --val-limit 20 scores on) are all 'yes': a prompt that always answers 'yes' would score 100 %.
    Version 3 keeps the same questions per split, in a seeded order."""
    v2, v3 = load_task(name, split_version=2), load_task(name, split_version=3)
    for split in ("train", "val", "test", "confirmation"):
        assert sorted(e.id for e in v3.split(split)) == sorted(e.id for e in v2.split(split))
        assert len({e.label for e in v3.split(split)[:20]}) >= 2, split
    assert [e.id for e in load_task(name).split("val")] == [e.id for e in v3.split("val")]  # the default
    assert [e.id for e in load_task(name, seed=1).split("val")[:20]] != [e.id for e in v3.split("val")[:20]]
    if name == "pubmedqa":  # what version 2 did, kept so that its sessions load the same questions in order
        assert {e.label for e in v2.split("val")[:20]} == {"yes"}
