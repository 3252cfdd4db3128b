"""Bad input, each case: a clear message, no crash, nothing half-written.

Data files (encodings, size, rows, labels, ids, formulas, HTML), prompts (empty, longer than the
model's context), minibatches (no failures, only failures), events files (corrupt middle line, torn
tail, events that do not fit), bundles (foreign, corrupt, path traversal) and an unusable cache folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import tracemalloc
from pathlib import Path

import pytest

import core.bundle as bundle_mod
from core.bundle import BundleError, bundle_bytes, import_bundle
from core.cache import CacheError, ResponseCache
from core.llm import ClientOptions
from core.runner import Runner
from core.session import Models, Session, SessionConfig, SessionError
from core.tables import MAX_BYTES, MAX_ROWS
from core.tasks import TaskError, load_custom, load_task, load_task_from_path
from tests.conftest import pgs_cmd, subprocess_pythonpath
from tests.fake_model import FakeModel, stub_responder
from tests.stub_server import Fault, StubServer, _content_text

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------- helpers


def csv_bytes(rows: list[list[str]], header=("question", "answer")) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def good_rows(n: int = 12) -> list[list[str]]:
    return [[f"Is claim {i} supported?", "yes" if i % 2 else "no"] for i in range(n)]


def load(data: bytes, filename: str = "data.csv", **kw):
    kw.setdefault("input_cols", ["question"])
    kw.setdefault("label_col", "answer")
    kw.setdefault("val_size", 2)
    kw.setdefault("test_size", 2)
    return load_custom(data, filename, **kw)


def one_sentence(msg: str) -> None:
    assert msg and "\n" not in msg and "Traceback" not in msg and len(msg) < 400, msg


def visible(root: Path) -> list[Path]:
    return sorted(root.rglob("*")) if root.exists() else []


def pgs(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(pgs_cmd() + list(args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def assert_one_line_exit_2(out: subprocess.CompletedProcess, *needles: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stdout[-500:], out.stderr[-2000:])
    err = out.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err


def make_session(tmp_path, fwd=None, bwd=None, method="textgrad", preset=None, cache=True, **kw) -> Session:
    cfg = SessionConfig(task={"name": "pubmedqa"}, method=method,
                        preset=preset or ("AutoMedPrompt paper" if method == "textgrad" else "quick"),
                        forward="fake:fwd", backward="fake:bwd", **{"val_limit": 5, **kw})
    runner = Runner(cache=ResponseCache(tmp_path / "cache") if cache else None)
    return Session.create(cfg, root=tmp_path / "sessions", models=Models(fwd or FakeModel(), bwd or FakeModel(), runner))


# ---------------------------------------------------------------- data files: encodings and size

ASCII_TABLE = csv_bytes(good_rows()).decode()
ACCENTED = csv_bytes([[f"Le café {i} est-il chaud?", "yes" if i % 2 else "no"] for i in range(12)]).decode()


ENCODING_CASES = [
    ("latin-1", ACCENTED.encode("latin-1"), ["not UTF-8 text", "byte 0xe9", "line 2", "CSV UTF-8"]),
    ("cp1252 quotes", ("question,answer\n" + "".join(f"\u201cQ{i}\u201d,{'yes' if i % 2 else 'no'}\n"
                                                     for i in range(12))).encode("cp1252"), ["not UTF-8 text"]),
    ("utf-16-le without BOM", ASCII_TABLE.encode("utf-16-le"), ["NUL bytes", "UTF-16", "without a byte-order mark"]),
    ("utf-16-be without BOM", ASCII_TABLE.encode("utf-16-be"), ["NUL bytes", "UTF-16"]),
    ("binary junk", bytes(range(256)) * 40, ["NUL bytes", "binary file"]),
    ("a PNG renamed .csv", b"\x89PNG\r\n\x1a\n" + bytes([0x89, 0xAB]) * 500, ["not UTF-8 text", "byte 0x89"]),
    ("a zip renamed .csv", b"PK\x03\x04" + b"\x00" * 200 + b"payload", ["binary file"]),
]


@pytest.mark.parametrize("name,data,needles", ENCODING_CASES, ids=[c[0] for c in ENCODING_CASES])
def test_undecodable_files_are_refused_with_a_clear_message(name, data, needles):
    with pytest.raises(TaskError) as e:
        load(data)
    one_sentence(str(e.value))
    for n in needles:
        assert n in str(e.value), (name, str(e.value))


def test_utf16_with_bom_and_utf8_bom_are_read():
    for data in (ACCENTED.encode("utf-16"), b"\xef\xbb\xbf" + ACCENTED.encode("utf-8")):
        t = load(data)
        assert any("café" in e.inputs["question"] for e in t.splits["train"])


def test_200_mb_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    big = tmp_path / "big.csv"
    with open(big, "wb") as f:  # sparse: 200 MB on paper, nothing on disk
        f.truncate(200 * 2**20)
    read = []
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self) or b"")
    tracemalloc.start()
    try:
        with pytest.raises(TaskError, match=r"big.csv is 200.0 MB; the size limit is 50 MB"):
            load_task_from_path(str(big), input_cols=["question"], label_col="answer")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not read and peak < 5 * 2**20  # the size came from stat(), not from reading the file
    monkeypatch.undo()
    out = pgs("evaluate", "--task", str(big), "--input-cols", "question", "--label-col", "answer",
              "--model", "fake:x", env={"PYTHONPATH": subprocess_pythonpath()})
    assert_one_line_exit_2(out, "size limit is 50 MB")


def test_upload_over_the_limit_is_refused_before_decoding():
    data = b"question,answer\n" + b"x" * (MAX_BYTES + 1)
    with pytest.raises(TaskError, match="size limit is 50 MB"):
        load(data)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_100000_rows_hit_the_row_limit(fmt):
    n = 100_000
    if fmt == "csv":
        data = b"question,answer\n" + b"".join(b"q%d,%s\n" % (i, b"yes" if i % 2 else b"no") for i in range(n))
    else:
        data = b"".join(b'{"question": "q%d", "answer": "%s"}\n' % (i, b"yes" if i % 2 else b"no") for i in range(n))
    with pytest.raises(TaskError) as e:
        load(data, f"rows.{fmt}")
    one_sentence(str(e.value))
    assert f"more than {MAX_ROWS:,} rows" in str(e.value) and f"limit is {MAX_ROWS:,}" in str(e.value)


def test_a_large_file_under_the_limit_loads_in_linear_time():
    # 20,000 rows x 2 input columns: a per-cell DataFrame access (each deep-copies df.attrs) took minutes
    n = 20_000
    data = b"question,context,answer\n" + b"".join(
        b"q%d,c%d,%s\n" % (i, i, (b"yes", b"no")[i % 2]) for i in range(n))
    import time

    t = time.perf_counter()
    task = load(data, input_cols=["question", "context"], val_size=50, test_size=50)
    assert time.perf_counter() - t < 30  # about 1 s here
    assert sum(len(v) for v in task.splits.values()) == n


# ---------------------------------------------------------------- data files: content


TABLE_CASES = [
    ("empty label", csv_bytes(good_rows()[:5] + [["Q?", ""]] + good_rows()[5:]), {},
     ["Column 'answer' has 1 empty cell(s)", "row 7"]),
    ("whitespace label", csv_bytes(good_rows() + [["Q?", "   "]]), {}, ["empty cell"]),
    ("label outside declared labels", csv_bytes(good_rows() + [["Q?", "maybe"]]), {"labels": ["yes", "no"]},
     ["labels outside the declared ones", "'maybe'"]),
    ("label not among the row's options",
     csv_bytes([[f"Q{i}", json.dumps({"A": "x", "B": "y"}), "A" if i % 2 else "B"] for i in range(11)]
               + [["Q?", json.dumps({"A": "x", "B": "y"}), "E"]], header=("question", "options", "answer")),
     {"choices_col": "options"}, ["not one of their row's options", "'E'"]),
    ("duplicate ids", csv_bytes([[f"id{i % 11}", f"Q{i}", "yes" if i % 2 else "no"] for i in range(12)],
                                header=("id", "question", "answer")), {"id_col": "id"},
     ["Duplicate id 'id0'", "row 2 and row 13"]),
    ("one label only", csv_bytes([[f"Q{i}", "yes"] for i in range(12)]), {}, ["1 distinct value"]),
    ("labels differing in case", csv_bytes([[f"Q{i}", ["Yes", "yes", "no"][i % 3]] for i in range(12)]), {},
     ["differ only in case"]),
    ("missing column", csv_bytes(good_rows()), {"input_cols": ["question", "context"]},
     ["Column 'context' is not in data.csv", "available columns: question, answer"]),
    ("header only", b"question,answer\n", {}, ["no data rows"]),
    ("empty file", b"", {}, ["is empty"]),
    ("ragged rows", b"question,answer\nQ1,yes,extra,more\nQ2,no\n", {}, ["Could not read data.csv", "4"]),
    ("unterminated quote", b'question,answer\n"Q1,yes\nQ2,no\n', {}, ["Could not read data.csv"]),
    ("duplicate header", csv_bytes([[f"Q{i}", "x", "yes"] for i in range(12)], header=("question", "question", "answer")),
     {}, ["appears more than once"]),
    ("too few rows for the splits", csv_bytes(good_rows(4)), {"val_size": 2, "test_size": 2}, ["needs 5"]),
    ("negative split size", csv_bytes(good_rows()), {"val_size": -1}, ["whole number >= 0"]),
    ("not a whole number", csv_bytes(good_rows()), {"test_size": 1.5}, ["whole number >= 0"]),
    ("a column with two roles", csv_bytes(good_rows()), {"input_cols": ["answer"]}, ["mapped twice"]),
    ("template-breaking column name", csv_bytes(good_rows(), header=("{q}", "answer")), {"input_cols": ["{q}"]},
     ["cannot be used in the template"]),
    ("unsupported file type", b"PK\x03\x04", {"filename": "data.xlsx"}, ["Unsupported file type '.xlsx'"]),
    ("JSONL with a broken line", b'{"question": "a", "answer": "yes"}\n{"question": "b", "answer": \n',
     {"filename": "d.jsonl"}, ["Line 2 of d.jsonl is not valid JSON"]),
    ("JSONL with an array line", b'[1, 2]\n', {"filename": "d.jsonl"}, ["Line 1 of d.jsonl is not a JSON object"]),
    ("JSON array of numbers", b"[1, 2, 3]", {"filename": "d.json"}, ["array of objects"]),
]


@pytest.mark.parametrize("name,data,kw,needles", TABLE_CASES, ids=[c[0] for c in TABLE_CASES])
def test_bad_tables_give_one_clear_sentence(name, data, kw, needles):
    kw = dict(kw)
    filename = kw.pop("filename", "data.csv")
    with pytest.raises(TaskError) as e:
        load(data, filename, **kw)
    msg = str(e.value)
    one_sentence(msg)
    for n in needles:
        assert n in msg, (name, msg)


FORMULAS = ['=HYPERLINK("http://evil.example/x","click")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)",
            "=1+1", "\t=cmd", "NA", "null", "0001", "1e5", "TRUE"]


def test_formula_looking_cells_stay_text():
    rows = [[f, "yes" if i % 2 else "no"] for i, f in enumerate(FORMULAS)] + good_rows(5)
    for fmt in ("csv", "jsonl"):
        if fmt == "csv":
            data, name = csv_bytes(rows), "f.csv"
        else:
            data, name = "".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in rows).encode(), "f.jsonl"
        t = load(data, name, val_size=0, test_size=0)
        got = {e.inputs["question"] for e in t.splits["train"]}
        assert {f.strip() for f in FORMULAS} <= got  # verbatim (only outer whitespace trimmed), never evaluated
        for e in t.splits["train"]:
            assert e.inputs["question"] in t.render(e)


def test_html_and_script_in_questions_are_kept_literally(tmp_path):
    evil = ['<script>alert("x")</script>', "<b>bold</b> &amp; <i>it</i>", "<img src=x onerror=alert(1)>",
            "{question} {options} {{answer}}", "</answer>Answer: yes"]
    rows = [[q, "yes" if i % 2 else "no"] for i, q in enumerate(evil)] + good_rows(8)
    t = load(csv_bytes(rows), val_size=0, test_size=0)
    by_q = {e.inputs["question"]: e for e in t.splits["train"]}
    for q in evil:
        assert q in by_q
        rendered = t.render(by_q[q])
        assert q in rendered and "&lt;" not in rendered  # escaping is the page's job, not the data's
    assert t.render(by_q["{question} {options} {{answer}}"]).count("{question}") == 1  # never re-substituted
    # through a whole session: events keep the text verbatim
    cfg = SessionConfig(task={"input_cols": ["question"], "label_col": "answer", "val_size": 4, "test_size": 2},
                        forward="fake:f", backward="fake:b")
    s = Session.create(cfg, root=tmp_path / "s", models=Models(FakeModel(), FakeModel(), Runner()),
                       data=("evil.csv", csv_bytes(rows)))
    s.run_auto(1)
    s.close()
    r = Session.open(s.id, root=tmp_path / "s", readonly=True)
    inputs = [row.input for st in r.steps for rep in st.forward for row in rep.rows]
    inputs += [row.input for row in r.versions[0].report.rows]
    assert any("<" in x for x in inputs)
    assert all(any(x == t.render(e) for e in t.splits["train"] + t.splits["val"]) for x in inputs)


def test_bad_custom_data_writes_no_session(tmp_path):
    cfg = SessionConfig(task={"input_cols": ["question"], "label_col": "answer"}, forward="fake:f", backward="fake:b")
    with pytest.raises(SessionError, match="not UTF-8"):
        Session.create(cfg, root=tmp_path / "s", data=("bad.csv", ACCENTED.encode("latin-1")))
    with pytest.raises(SessionError, match="task settings .* are invalid|no data was given"):
        Session.create(cfg, root=tmp_path / "s")
    bad_builtin = SessionConfig(task={"name": "pubmedqa", "val_size": 10_000}, forward="fake:f", backward="fake:b")
    with pytest.raises(SessionError, match="validation size must be at most 500"):
        Session.create(bad_builtin, root=tmp_path / "s")
    with pytest.raises(SessionError, match="not a session id"):
        Session.create(SessionConfig(task={"name": "pubmedqa"}, forward="fake:f", backward="fake:b"),
                       root=tmp_path / "s", sid="../../outside")
    assert visible(tmp_path / "s") == [] and not (tmp_path.parent / "outside").exists()


# ---------------------------------------------------------------- prompts


def test_empty_seed_prompt_and_empty_edit(tmp_path):
    for seed in ("", "   \n\t"):
        with pytest.raises(SessionError, match="seed prompt is empty"):
            make_session(tmp_path, seed_prompt=seed)
    assert visible(tmp_path / "sessions") == []
    s = make_session(tmp_path)
    s.run_baseline()
    s.start_step()
    before = s.events_path.read_bytes()
    for text in ("", "  \n ", None):
        with pytest.raises(SessionError, match="edited prompt is empty"):
            s.decide("edit", prompt=text)
    with pytest.raises(SessionError, match="unchanged"):
        s.decide("edit", prompt="  " + s.current.prompt.upper() + " ")
    assert s.events_path.read_bytes() == before and s.state == "proposed"
    s.close()
    out = pgs("optimize", "--task", "pubmedqa", "--forward", "fake:f", "--prompt", " ",
              "--sessions-dir", str(tmp_path / "cli"),
              env={"PGS_CACHE_DIR": str(tmp_path / "c"), "PYTHONPATH": subprocess_pythonpath()})
    assert_one_line_exit_2(out, "seed prompt is empty")
    assert visible(tmp_path / "cli") == []


class ContextLimitStub(StubServer):
    """Answers 400 context_length_exceeded, as OpenAI does, when a request's text is over `limit` characters."""

    limit = 12_000

    async def _completion(self, req, body, writer):
        size = sum(len(_content_text(m.get("content"))) for m in body.get("messages") or [])
        if size > self.limit:
            req.fault = Fault("400")
            return await self._send(req, writer, 400, {"error": {
                "message": f"This model's maximum context length is 4096 tokens. However, your messages resulted "
                           f"in {size // 3} tokens. Please reduce the length of the messages.",
                "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})
        return await super()._completion(req, body, writer)


def _stub_session(tmp_path, stub, seed_prompt):
    cfg = SessionConfig(task={"name": "pubmedqa"}, forward="openai:gpt-4o-mini", backward="openai:gpt-4o",
                        forward_base_url=stub.base_url, backward_base_url=stub.base_url, val_limit=5,
                        seed_prompt=seed_prompt)
    models = Models.from_config(cfg, Runner(cache=ResponseCache(tmp_path / "cache")), keys={"openai": "sk-test"},
                                options=ClientOptions(timeout_s=10, max_retries=2))
    return Session.create(cfg, root=tmp_path / "sessions", models=models)


def test_seed_prompt_longer_than_the_context(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with ContextLimitStub(responder=stub_responder()) as stub:
        s = _stub_session(tmp_path, stub, "Weigh the evidence. " * 1000)
        with pytest.raises(SessionError) as e:
            s.run_baseline()
        msg = str(e.value)
        assert "Every call of the baseline failed" in msg and "maximum context length" in msg and "400" in msg
        assert "Nothing was recorded" in msg and "\n" not in msg
        assert stub.completion_count == 5  # a 400 is not retried
        assert s.state == "new" and [e["type"] for e in s.events] == ["created"]
        s.close()
        r = Session.open(s.id, root=tmp_path / "sessions", readonly=True)
        assert r.state == "new" and not r.warnings


def test_edited_prompt_longer_than_the_context_can_be_withdrawn(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with ContextLimitStub(responder=stub_responder()) as stub:
        s = _stub_session(tmp_path, stub, "You are a careful assistant.")
        s.run_baseline()
        s.start_step()
        s.decide("edit", prompt="Weigh the evidence. " * 1000)
        with pytest.raises(SessionError, match="Every call of the validation failed.*maximum context length"):
            s.validate()
        assert s.state == "decided" and s.step.gate is None
        s.decide("reject")  # a decision that cannot be validated can be changed: the session is not stuck
        assert s.state == "ready" and s.steps[-1].outcome == "rejected"
        assert s.run_auto(1) == "done"
        sid = s.id
        s.close()
        r = Session.open(sid, root=tmp_path / "sessions", readonly=True)
        assert r.state == "ready" and [st.outcome for st in r.steps][0] == "rejected"


# ---------------------------------------------------------------- minibatches


def _pubmedqa_gold(user: str) -> tuple[str, list[str]]:
    """Gold label of a rendered PubMedQA question (our own map: FakeModel's is shared with other tests)."""
    if not _PUBMEDQA:
        t = load_task("pubmedqa")
        _PUBMEDQA.update({t.render(e): e.label for split in t.splits.values() for e in split})
    return _PUBMEDQA[user], ["yes", "no", "maybe"]


_PUBMEDQA: dict[str, str] = {}


class PerfectModel(FakeModel):
    def forward(self, system: str, user: str) -> str:
        return f"Answer: {_pubmedqa_gold(user)[0]}"


class HopelessModel(FakeModel):
    def forward(self, system: str, user: str) -> str:
        gold, labels = _pubmedqa_gold(user)
        return f"Answer: {next(lab for lab in labels if lab != gold)}"


@pytest.mark.parametrize("method", ["protegi", "textgrad"])
def test_minibatch_with_no_failures(tmp_path, method):
    bwd = FakeModel()
    s = make_session(tmp_path, fwd=PerfectModel(), bwd=bwd, method=method)
    s.run_baseline()
    st = s.start_step()
    assert all(r.correct for r in st.forward[0].rows)
    if method == "protegi":
        assert not st.proposal.candidates and "No failures in this minibatch" in st.proposal.note
        assert sum(bwd.calls.values()) == 0
        s.decide("skip")
        assert s.steps[-1].outcome == "skipped"
    else:  # TextGrad learns from correct answers too: a candidate, whose gate then decides
        assert st.proposal.candidates
        assert s.run_auto(1) == "done"
    s.close()


@pytest.mark.parametrize("method", ["protegi", "textgrad"])
def test_minibatch_with_only_failures(tmp_path, method):
    s = make_session(tmp_path, fwd=HopelessModel(), method=method, patience=5)
    s.run_baseline()
    assert s.current.accuracy == 0.0
    st = s.start_step()
    rows = st.forward[0].rows
    assert rows and not any(r.correct for r in rows)
    assert st.proposal.gradients and st.proposal.candidates
    failed = {r.id for r in rows}
    assert all(set(g.failure_ids) <= failed and g.failure_ids for g in st.proposal.gradients)
    result = s.run_auto(2)
    assert result == "done" or result.startswith("patience"), result
    assert s.state in ("ready", "stopped")
    s.close()


# ---------------------------------------------------------------- events files


def _finished_session(tmp_path) -> Session:
    s = make_session(tmp_path)
    s.run_auto(2)
    s.close()
    return s


def test_corrupt_middle_line_is_refused_and_left_untouched(tmp_path):
    s = _finished_session(tmp_path)
    lines = s.events_path.read_bytes().split(b"\n")
    bad = b"\n".join(lines[:3] + [b'{"type": "forward", "step": 1, "repo'] + lines[3:])
    s.events_path.write_bytes(bad)
    for _ in range(2):  # refused both times: no lock left behind, nothing rewritten
        with pytest.raises(SessionError) as e:
            Session.open(s.id, root=tmp_path / "sessions")
        assert "line 4 is corrupt" in str(e.value) and "\n" not in str(e.value)
        assert s.events_path.read_bytes() == bad
    r = Session.open(s.id, root=tmp_path / "sessions", readonly=True)  # a reader sees what came before
    assert r.warnings and "line 4" in r.warnings[0] and len(r.events) == 3 and r.versions
    assert s.events_path.read_bytes() == bad


def test_events_that_do_not_fit_are_a_clear_error(tmp_path):
    s = _finished_session(tmp_path)
    good = s.events_path.read_text().splitlines()
    variants = [
        [good[0], json.dumps({"type": "gate", "step": 9, "accepted": True})] + good[1:],  # gate with no step
        [json.dumps({"type": "created", "config": {"task": {"name": "pubmedqa"}, "evil": 1}})] + good[1:],
        [good[0], json.dumps({"type": "baseline", "prompt": "p", "report": {"rows": [{"bogus": 1}]}})],
        [good[0], good[1], json.dumps({"type": "stopped", "reason": "x", "spend": {"calls": "many"}})],
        [json.dumps({"type": "created", "config": {"task": {"file": "../../../etc/passwd", "input_cols": ["a"],
                                                             "label_col": "b"}}})],
    ]
    for lines in variants:
        s.events_path.write_text("\n".join(lines) + "\n")
        with pytest.raises(SessionError) as e:
            Session.open(s.id, root=tmp_path / "sessions")
        one_sentence(str(e.value))


def test_torn_last_line_resumes_with_a_warning(tmp_path):
    s = make_session(tmp_path)
    s.run_baseline()
    s.close()
    good = s.events_path.read_bytes()
    s.events_path.write_bytes(good + b'{"type": "step_started", "st')
    r = Session.open(s.id, root=tmp_path / "sessions", models=Models(FakeModel(), FakeModel(), Runner()))
    assert r.warnings and "incomplete last line" in r.warnings[0]
    assert s.events_path.read_bytes() == good
    assert r.run_auto(1) == "done"
    r.close()


def test_empty_and_foreign_events_files(tmp_path):
    s = _finished_session(tmp_path)
    for content in (b"", b"\n\n", b'{"hello": "world"}\n', b'{"type": "baseline"}\n', "\u00e9\n".encode("latin-1")):
        s.events_path.write_bytes(content)
        with pytest.raises(SessionError) as e:
            Session.open(s.id, root=tmp_path / "sessions", readonly=True)
        one_sentence(str(e.value))


# ---------------------------------------------------------------- bundles


@pytest.fixture
def bundle(tmp_path) -> dict:
    s = make_session(tmp_path)
    s.run_auto(1)
    b = json.loads(bundle_bytes(s, ResponseCache(tmp_path / "cache")))
    s.close()
    return b


def _custom_bundle(tmp_path) -> dict:
    cfg = SessionConfig(task={"input_cols": ["question"], "label_col": "answer", "val_size": 3, "test_size": 2},
                        forward="fake:f", backward="fake:b")
    s = Session.create(cfg, root=tmp_path / "src", models=Models(FakeModel(), FakeModel(), Runner()),
                       data=("mine.csv", csv_bytes(good_rows())))
    b = json.loads(bundle_bytes(s, None))
    s.close()
    return b


def _refused(tmp_path, data: bytes, match: str) -> None:
    root = tmp_path / "imported"
    outside = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(BundleError) as e:
        import_bundle(data, root=root, cache=ResponseCache(tmp_path / "cache2"))
    one_sentence(str(e.value))
    assert __import__("re").search(match, str(e.value)), str(e.value)
    assert visible(root) == []  # nothing half-written, no temporary folder left
    assert {p.name for p in tmp_path.iterdir()} <= set(outside) | {"imported", "cache2"}
    assert len(ResponseCache(tmp_path / "cache2")) == 0


BUNDLE_CASES = [
    ("binary", lambda b: b"\x89PNG\r\n\x1a\n\x00\x00", "not a JSON bundle"),
    ("JSON list", lambda b: b"[1, 2, 3]", "not a Prompt Gradient Studio bundle"),
    ("a notebook", lambda b: json.dumps({"cells": [], "nbformat": 4}).encode(), "not a Prompt Gradient Studio"),
    ("truncated", lambda b: json.dumps(b).encode()[:-200], "not a JSON bundle"),
    ("future version", lambda b: json.dumps({**b, "version": 2}).encode(), "not supported"),
    ("events not a list", lambda b: json.dumps({**b, "events": {"0": b["events"][0]}}).encode(), "no events"),
    ("pickle smuggled as an event", lambda b: json.dumps({**b, "events": b["events"] + [
        {"type": "__reduce__", "payload": "cos\nsystem\n(S'touch /tmp/pwned'\ntR."}]}).encode(), "not a known event"),
    ("events out of order", lambda b: json.dumps({**b, "events": [b["events"][0]] + [
        e for e in b["events"] if e["type"] == "gate"]}).encode(), "events do not load"),
    ("unknown settings", lambda b: json.dumps({**b, "events": [
        {**b["events"][0], "config": {**b["events"][0]["config"], "exec": "import os"}}] + b["events"][1:]}).encode(),
     "settings are invalid"),
    ("response key traversal", lambda b: json.dumps({**b, "responses": {"../../x": {"text": "t"}}}).encode(),
     "malformed response"),
    ("response not text", lambda b: json.dumps({**b, "responses": {"a" * 64: {"text": {"$eval": 1}}}}).encode(),
     "malformed response"),
    ("data for a built-in task", lambda b: json.dumps({**b, "data": {"filename": "x.csv", "content": "a"}}).encode(),
     "does not use a file"),
]


@pytest.mark.parametrize("name,make,match", BUNDLE_CASES, ids=[c[0] for c in BUNDLE_CASES])
def test_foreign_and_corrupt_bundles_write_nothing(tmp_path, bundle, name, make, match):
    _refused(tmp_path, make(bundle), match)


def test_bundle_size_limit(tmp_path, bundle, monkeypatch):
    monkeypatch.setattr(bundle_mod, "MAX_BUNDLE_BYTES", 1000)
    _refused(tmp_path, json.dumps(bundle).encode(), r"the limit is 0 MB")
    monkeypatch.undo()
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(bundle_mod.MAX_BUNDLE_BYTES + 1)
    out = pgs("import", str(big), "--sessions-dir", str(tmp_path / "imp"))
    assert_one_line_exit_2(out, "the limit is 200 MB")
    assert visible(tmp_path / "imp") == []


def test_bundle_path_traversal_in_data_filename_and_session_id(tmp_path):
    b = _custom_bundle(tmp_path)
    root = tmp_path / "deep" / "imported"
    # a data filename that climbs out: refused unless it names the task's own file, which is a plain name
    for fname, cfg_file in (("../../../escape.csv", "../../../escape.csv"), ("/etc/passwd", "/etc/passwd"),
                            ("..", "..")):
        evil = json.loads(json.dumps(b))
        evil["data"]["filename"] = fname
        evil["events"][0]["config"]["task"]["file"] = cfg_file
        with pytest.raises(BundleError):
            import_bundle(json.dumps(evil).encode(), root=root)
        assert visible(root) == []
    # the file name is reduced to its base name; the session id "../../x" is replaced by a fresh one
    evil = json.loads(json.dumps(b))
    evil["data"]["filename"] = "../../mine.csv"
    evil["session"] = "../../x"
    sid = import_bundle(json.dumps(evil).encode(), root=root)
    assert sid != "../../x" and "/" not in sid and ".." not in sid
    assert (root / sid / "mine.csv").is_file()
    assert {p.relative_to(tmp_path).parts[:2] for p in tmp_path.rglob("*") if p.is_file()} <= {
        ("src", b["session"]), ("deep", "imported")}
    assert not (tmp_path / "x").exists() and not (tmp_path / "escape.csv").exists()
    s = Session.open(sid, root=root, readonly=True)
    assert s.task.name == "custom:mine.csv"


# ---------------------------------------------------------------- cache folder


def test_cache_folder_that_cannot_be_used(tmp_path):
    afile = tmp_path / "regular-file"
    afile.write_text("not a folder")
    for bad in (afile / "cache", afile):  # under a file (mkdir fails even as root), or a file itself
        with pytest.raises(CacheError) as e:
            ResponseCache(bad)
        one_sentence(str(e.value))
        assert str(bad) in str(e.value) and "cannot be used" in str(e.value) and "PGS_CACHE_DIR" in str(e.value)
    if os.geteuid() != 0:  # a read-only folder only blocks writes for non-root users
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(CacheError, match="cannot be used"):
            ResponseCache(ro / "cache")
    assert afile.read_text() == "not a folder"
    env = {"PGS_SESSIONS_DIR": str(tmp_path / "sessions"), "PYTHONPATH": subprocess_pythonpath()}
    for args in (["evaluate", "--task", "pubmedqa", "--model", "fake:x", "--limit", "2", "--cache-dir", str(afile / "c")],
                 ["optimize", "--task", "pubmedqa", "--forward", "fake:x", "--steps", "1", "--val-limit", "2",
                  "--cache-dir", str(afile / "c")]):
        assert_one_line_exit_2(pgs(*args, env=env), "cache folder", "cannot be used")
    out = pgs("evaluate", "--task", "pubmedqa", "--model", "fake:x", "--limit", "2",
              env={**env, "PGS_CACHE_DIR": str(afile)})
    assert_one_line_exit_2(out, "cannot be used")
    assert visible(tmp_path / "sessions") == []


def test_sessions_folder_that_cannot_be_used(tmp_path):
    afile = tmp_path / "regular-file"
    afile.write_text("x")
    out = pgs("optimize", "--task", "pubmedqa", "--forward", "fake:x", "--steps", "1", "--val-limit", "2",
              "--sessions-dir", str(afile / "sessions"),
              env={"PGS_CACHE_DIR": str(tmp_path / "c"), "PYTHONPATH": subprocess_pythonpath()})
    assert_one_line_exit_2(out, "Cannot write the session folder")


def test_prompt_file_that_cannot_be_read(tmp_path):
    binary = tmp_path / "p.txt"
    binary.write_bytes(bytes(range(128, 256)))
    env = {"PGS_CACHE_DIR": str(tmp_path / "c"), "PGS_SESSIONS_DIR": str(tmp_path / "s"),
           "PYTHONPATH": subprocess_pythonpath()}
    for f in (binary, tmp_path / "missing.txt"):
        out = pgs("optimize", "--task", "pubmedqa", "--forward", "fake:x", "--prompt-file", str(f), env=env)
        assert_one_line_exit_2(out, "Cannot read --prompt-file")
    assert visible(tmp_path / "s") == []
