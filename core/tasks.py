"""Tasks: examples, built-in datasets (PubMedQA, MedQA, LIAR), custom CSV/JSONL files, seeded splits.

Answer parsing lives in ``core.parsing`` (``Task.parse`` calls it).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import math
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from core import tables
from core.parsing import parse_answer
from core.tables import MAX_BYTES, MAX_ROWS, cell_text

MAX_LABELS = 20
DATA_DIR = Path(__file__).resolve().parent / "data"
BUILTIN_TASKS: tuple[str, ...] = ("pubmedqa", "medqa", "liar")
SPLITS: tuple[str, ...] = ("train", "val", "test", "confirmation")
# How built-in tasks are carved. 1: the original carving (validation 50/100, no confirmation slice), kept for
# task specs without "split_version" so that old sessions load the same questions. 2: a validation pool of up
# to 200 for the adaptive gate, plus a held-out confirmation slice that no gate ever uses. 3: the same questions
# as 2, each split in a seeded order, so its first N questions (--val-limit, a gate's first look) are a fair
# sample: PubMedQA's official folds list their 'yes' questions first, so in 2 the first 20 validation
# questions are all 'yes'.
SPLIT_VERSION = 3
SPLIT_VERSIONS = (1, 2, 3)
VAL_POOL = 200
CONFIRMATION_SIZE = 100


class TaskError(ValueError):
    """A task or data file that cannot be used; the message is shown to the user as is (one clear sentence)."""


@dataclass
class Example:
    """One question: the input fields shown to the model, the gold label and (MCQ) the options."""

    id: str
    inputs: dict[str, str]
    label: str
    choices: dict[str, str] | None = None


def answer_instruction(labels: list[str]) -> str:
    """The answer-format sentence every template ends with."""
    return f'Give your final answer on the last line as "Answer: <{"|".join(labels)}>".'


_PLACEHOLDER_RE = re.compile(r"\{([^{}\n]{1,200})\}")


@dataclass
class Task:
    """A labelled dataset with a fixed user-message template, seeded splits and an answer parser."""

    name: str
    title: str
    description: str
    labels: list[str]
    template: str
    splits: dict[str, list[Example]]
    source: str = ""
    verdicts: dict[str, str] = field(default_factory=dict)  # verdict phrases -> labels (LIAR: "a lie" -> Yes)
    notices: list[str] = field(default_factory=list)  # what loading a custom file changed or noticed
    file_format: str = ""  # how a custom file was read (delimiter, header, encoding)

    def render(self, ex: Example) -> str:
        """The user message the forward model sees (template filled)."""
        values = dict(ex.inputs)
        if ex.choices is not None:
            values["options"] = format_options(ex.choices)
        # One pass, so braces inside the inserted text are never re-read as placeholders.
        return _PLACEHOLDER_RE.sub(lambda mt: values.get(mt.group(1), mt.group(0)), self.template)

    def parse(self, text: str | None, ex: Example | None = None) -> str | None:
        """Parsed label from a model reply, or None (= unparsed); pass ex to also match MCQ option text."""
        return parse_answer(text, self.labels, ex.choices if ex is not None else None, self.verdicts)

    def split(self, name: str) -> list[Example]:
        """The examples of one split ("train", "val" or "test")."""
        if name not in self.splits:
            raise TaskError(f"Unknown split '{name}'; use one of: {', '.join(self.splits)}.")
        return self.splits[name]

    def example(self, example_id: str) -> Example:
        """The example with this id, from any split (KeyError when none): the one id -> Example map."""
        by_id = self.__dict__.get("_by_id")
        if by_id is None:
            by_id = self.__dict__["_by_id"] = {ex.id: ex for split in self.splits.values() for ex in split}
        return by_id[example_id]

    def answer_format(self) -> str:
        """The answer-format instruction alone (the last sentence of the template)."""
        return answer_instruction(self.labels)

    def info(self) -> TaskInfo:
        """A summary for listings."""
        sizes = {k: len(v) for k, v in self.splits.items()}
        return TaskInfo(self.name, self.title, self.description, list(self.labels), sizes, self.source)


@dataclass
class TaskInfo:
    """What a task listing shows."""

    name: str
    title: str
    description: str
    labels: list[str]
    sizes: dict[str, int]
    source: str


def format_options(choices: dict[str, str]) -> str:
    """MCQ options as 'A. text' lines."""
    return "\n".join(f"{k}. {v}" for k, v in choices.items())


def sample(examples: list[Example], k: int, seed: int) -> list[Example]:
    """k examples drawn without replacement, seeded and deterministic, kept in their original order."""
    if k < 0:
        raise ValueError("k must be >= 0")
    if k >= len(examples):
        return list(examples)
    picked = sorted(random.Random(seed).sample(range(len(examples)), k))
    return [examples[i] for i in picked]


def seeded_order(examples: list[Example], seed: int) -> list[Example]:
    """Examples sorted by id, then shuffled with random.Random(seed): the same on every machine."""
    ordered = sorted(examples, key=lambda e: (len(e.id), e.id))
    random.Random(seed).shuffle(ordered)
    return ordered


def _check_size(what: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or value < 0):
        raise TaskError(f"The {what} size must be a whole number >= 0, got {value!r}.")


def _copy(examples: list[Example]) -> list[Example]:
    """Fresh Example objects, so callers never mutate the cached originals."""
    return [
        replace(e, inputs=dict(e.inputs), choices=dict(e.choices) if e.choices is not None else None)
        for e in examples
    ]


# ---------------------------------------------------------------- raw data (cached)


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _context_block(labels: list[str], passages: list[str]) -> str:
    parts = []
    for i, passage in enumerate(passages):
        name = labels[i] if i < len(labels) else ""
        parts.append(passage if not name or name == "UNLABELLED" else f"{name}: {passage}")
    return "\n\n".join(parts)


@lru_cache(maxsize=1)
def _pubmedqa_split_ids() -> dict:
    """The official split: {"test": [500 PMIDs], "dev_folds": [[50 PMIDs] x 10]} (see data/pubmedqa/SOURCE.md)."""
    return json.loads((DATA_DIR / "pubmedqa" / "pqal_split_ids.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _pubmedqa_raw() -> tuple[dict[str, Example], tuple[str, ...]]:
    """All 1000 PQA-L examples by PMID, and the official test PMIDs."""
    base = DATA_DIR / "pubmedqa"
    raw = json.loads((base / "ori_pqal.json").read_text(encoding="utf-8"))
    test_ids = tuple(_pubmedqa_split_ids()["test"])
    examples = {
        pmid: Example(
            id=pmid,
            # Only QUESTION + CONTEXTS (the reasoning-required setting); never LONG_ANSWER or *_pred.
            inputs={"question": r["QUESTION"], "context": _context_block(r["LABELS"], r["CONTEXTS"])},
            label=r["final_decision"],
        )
        for pmid, r in raw.items()
    }
    return examples, test_ids


@lru_cache(maxsize=1)
def _medqa_raw() -> tuple[Example, ...]:
    rows = _read_jsonl(DATA_DIR / "medqa_usmle_4opt" / "test.jsonl")
    return tuple(
        Example(id=str(r["realidx"]), inputs={"question": r["question"]}, label=r["answer_idx"],
                choices={k: r["options"][k] for k in "ABCD"})
        for r in rows
    )


@lru_cache(maxsize=2)
def _liar_raw(split: str) -> tuple[Example, ...]:
    rows = _read_jsonl(DATA_DIR / "protegi_liar" / f"{split}.jsonl")
    # ProTeGi: id f"{split}-{i}", categories ['No', 'Yes'] with label 1 -> "Yes" (the statement is a lie).
    return tuple(
        Example(id=f"{split}-{i}", inputs={"text": r["text"]}, label="Yes" if int(r["label"]) == 1 else "No")
        for i, r in enumerate(rows)
    )


# ---------------------------------------------------------------- built-in tasks

_PUBMEDQA_BODY = "Context:\n{context}\n\nQuestion: {question}"
_MEDQA_BODY = "Question: {question}\n\nOptions:\n{options}"
_LIAR_BODY = "{text}\n\nIs this statement a lie? Answer Yes if it is a lie, No if it is not."


def _carve(what: str, pool: list[Example], val_n: int, conf_n: int, train_n: int | None,
           ) -> tuple[list[Example], list[Example], list[Example], list[Example]]:
    """Split version 2 of a seeded pool: validation first, then confirmation, then training; the rest left over."""
    if val_n + conf_n >= len(pool):
        raise TaskError(f"{what} has {len(pool)} questions to carve from; validation {val_n} + confirmation {conf_n} "
                        f"must leave at least one for training.")
    rest = pool[val_n + conf_n:]
    train_n = len(rest) if train_n is None else train_n
    if not 1 <= train_n <= len(rest):
        raise TaskError(f"{what}: with validation {val_n} and confirmation {conf_n}, the training size must be "
                        f"between 1 and {len(rest)}.")
    return pool[:val_n], pool[val_n:val_n + conf_n], rest[:train_n], rest[train_n:]


def _splits(train: list[Example], val: list[Example], test: list[Example],
            confirmation: list[Example] | None) -> dict[str, list[Example]]:
    out = {"train": _copy(train), "val": _copy(val), "test": _copy(test)}
    if confirmation is not None:
        out["confirmation"] = _copy(confirmation)
    return out


def _pubmedqa_folds(examples: dict[str, Example], seed: int) -> list[Example]:
    """The 500 non-test questions as the 10 official CV dev folds (50 each), the folds in a seeded order."""
    folds = _pubmedqa_split_ids()["dev_folds"]
    order = list(range(len(folds)))
    random.Random(seed).shuffle(order)
    return [examples[pmid] for i in order for pmid in folds[i]]


def _pubmedqa(seed: int, val_size: int | None, train_size: int | None, test_size: int | None,
              version: int = 1, confirm_size: int | None = None) -> Task:
    examples, test_ids = _pubmedqa_raw()
    test_set = set(test_ids)
    confirmation = None
    if version >= 2:  # whole official dev folds: validation 4 folds, confirmation 2, training 4 (by default)
        val_n = VAL_POOL if val_size is None else val_size
        conf_n = CONFIRMATION_SIZE if confirm_size is None else confirm_size
        val, confirmation, train, _ = _carve("PubMedQA (non-test)", _pubmedqa_folds(examples, seed), val_n, conf_n,
                                             train_size)
    else:
        pool = seeded_order([e for pmid, e in examples.items() if pmid not in test_set], seed)
        val_n = 50 if val_size is None else val_size
        if val_n > len(pool):
            raise TaskError(f"PubMedQA has {len(pool)} non-test questions; the validation size must be at most {len(pool)}.")
        rest = pool[val_n:]
        train_n = len(rest) if train_size is None else train_size
        if train_n > len(rest):
            raise TaskError(f"PubMedQA: with validation {val_n}, the training size can be at most {len(rest)}.")
        val, train = pool[:val_n], rest[:train_n]
    test = [examples[i] for i in test_ids]
    if test_size is not None:
        test = sample(test, test_size, seed)
    labels = ["yes", "no", "maybe"]
    return Task(
        name="pubmedqa",
        title="PubMedQA (PQA-L)",
        description="Answer a biomedical research question with yes, no or maybe from the abstract "
        "(conclusion withheld); the official 500-question test split.",
        labels=labels,
        template=f"{_PUBMEDQA_BODY}\n\n{answer_instruction(labels)}",
        splits=_splits(train, val, test, confirmation),
        source="PubMedQA PQA-L, Jin et al. 2019 (github.com/pubmedqa/pubmedqa), MIT License.",
    )


def _medqa(seed: int, val_size: int | None, train_size: int | None, test_size: int | None,
           version: int = 1, confirm_size: int | None = None) -> Task:
    pool = seeded_order(list(_medqa_raw()), seed)
    confirmation = None
    if version >= 2:  # validation, confirmation, training, then everything else is test
        val_n = VAL_POOL if val_size is None else val_size
        conf_n = CONFIRMATION_SIZE if confirm_size is None else confirm_size
        val, confirmation, train, test = _carve("MedQA", pool, val_n, conf_n, 200 if train_size is None else train_size)
        if not test:
            raise TaskError(f"MedQA has {len(pool)} questions; validation + confirmation + training must leave at "
                            "least one for test.")
    else:
        val_n = 100 if val_size is None else val_size
        train_n = 200 if train_size is None else train_size
        if val_n + train_n >= len(pool):
            raise TaskError(f"MedQA has {len(pool)} questions; validation + training must leave at least one for test.")
        val, train, test = pool[:val_n], pool[val_n:val_n + train_n], pool[val_n + train_n:]
    if test_size is not None:
        test = test[:test_size]
    labels = ["A", "B", "C", "D"]
    return Task(
        name="medqa",
        title="MedQA (USMLE, 4 options)",
        description="Pick the single best option (A-D) for a USMLE-style clinical question; "
        "train and validation are carved from the 1,273-question test file.",
        labels=labels,
        template=f"{_MEDQA_BODY}\n\n{answer_instruction(labels)}",
        splits=_splits(train, val, test, confirmation),
        source="MedQA, Jin et al. 2020 (github.com/jind11/MedQA), MIT License; copy from "
        "xk-huang/medagents-benchmark (MIT).",
    )


# "Is this statement a lie?": replies that end "...so it is a lie." name no label, but say which
LIAR_VERDICTS = {"a lie": "Yes", "not a lie": "No", "lying": "Yes", "not lying": "No", "a falsehood": "Yes",
                 "truthful": "No", "not truthful": "Yes", "untruthful": "Yes", "true": "No", "not true": "Yes"}


def _liar(seed: int, val_size: int | None, train_size: int | None, test_size: int | None,
          version: int = 1, confirm_size: int | None = None) -> Task:
    pool = seeded_order(list(_liar_raw("train")), seed)
    confirmation = None
    if version >= 2:  # from ProTeGi's training file: validation, confirmation, then training
        val_n = VAL_POOL if val_size is None else val_size
        conf_n = CONFIRMATION_SIZE if confirm_size is None else confirm_size
        rest_n = len(pool) - val_n - conf_n
        val, confirmation, train, _ = _carve("LIAR (training file)", pool, val_n, conf_n,
                                             None if train_size is None else min(train_size, max(1, rest_n)))
    else:
        val_n = 100 if val_size is None else val_size
        if val_n >= len(pool):
            raise TaskError(f"LIAR has {len(pool)} training statements; the validation size must be below that.")
        rest = pool[val_n:]
        train_n = len(rest) if train_size is None else min(train_size, len(rest))
        val, train = pool[:val_n], rest[:train_n]
    test = list(_liar_raw("test"))
    if test_size is not None:
        test = test[:test_size]  # as ProTeGi: the first n test examples in file order
    labels = ["No", "Yes"]
    return Task(
        name="liar",
        title="LIAR (ProTeGi binary)",
        description="Decide whether a political statement, with its speaker and context, is a lie (Yes) "
        "or not (No), as in ProTeGi's LIAR task.",
        labels=labels,
        template=f"{_LIAR_BODY}\n\n{answer_instruction(labels)}",
        splits=_splits(train, val, test, confirmation),
        source="LIAR (Wang 2017) as shipped in microsoft/LMOps prompt_optimization (MIT); "
        "underlying data license unknown.",
        verdicts=LIAR_VERDICTS,
    )


_BUILDERS = {"pubmedqa": _pubmedqa, "medqa": _medqa, "liar": _liar}


def load_task(name: str, *, seed: int = 0, val_size: int | None = None, train_size: int | None = None,
              test_size: int | None = None, split_version: int = SPLIT_VERSION,
              confirm_size: int | None = None) -> Task:
    """A built-in task with seeded splits (the same ids for the same seed on every machine); split_version 1 is
    the original carving (no confirmation slice), 2 the validation pool of 200 plus a confirmation slice."""
    key = (name or "").strip().lower()
    if key not in _BUILDERS:
        raise TaskError(f"Unknown task '{name}'. Built-in tasks: {', '.join(BUILTIN_TASKS)}.")
    if split_version not in SPLIT_VERSIONS or isinstance(split_version, bool):
        raise TaskError(f"Unknown split version {split_version!r}; this app knows "
                        f"{', '.join(map(str, SPLIT_VERSIONS))}.")
    if confirm_size is not None and split_version < 2:
        raise TaskError("A confirmation slice needs split version 2 or later.")
    for what, value in (("validation", val_size), ("training", train_size), ("test", test_size),
                        ("confirmation", confirm_size)):
        _check_size(what, value)
    task = _BUILDERS[key](int(seed), val_size, train_size, test_size, min(split_version, 2), confirm_size)
    if split_version >= 3:  # same questions as version 2, each split in a seeded order (see SPLIT_VERSION)
        task.splits = {name: seeded_order(exs, hash_parts(seed, key, name)) for name, exs in task.splits.items()}
    return task


def hash_parts(*parts: object) -> int:
    """A seed from parts, the same on every machine (Python's hash() of a str is salted per process)."""
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")


def builtin_spec(name: str, seed: int = 0, **sizes: int | None) -> dict:
    """The task spec a new session stores for a built-in task: the current split version, and the sizes given."""
    spec = {"name": name, "seed": int(seed), "split_version": SPLIT_VERSION}
    spec.update({k: int(v) for k, v in sizes.items() if v is not None})
    return spec


CUSTOM_SPEC_KEYS = ("input_cols", "label_col", "id_col", "choices_col", "labels", "val_size", "test_size", "seed",
                    "header", "option_cols", "label_threshold")
BUILTIN_SPEC_KEYS = ("seed", "val_size", "train_size", "test_size", "confirm_size")


def task_from_spec(spec: dict, folder: Path | str | None = None, content: bytes | None = None) -> Task:
    """The task a session's spec names: a built-in one, or a custom file read from `folder` (or `content`).
    A spec from before split versions keeps the original carving, so old sessions load the same questions."""
    if "file" in spec:
        f = spec["file"]
        if not isinstance(f, str) or not f or f != os.path.basename(f) or f.startswith("."):
            raise TaskError(f"the data file name {f!r} is not a plain file name")
        if content is None:
            if folder is None:
                raise TaskError("the task reads a data file, but no folder holds it")
            content = (Path(folder) / f).read_bytes()
        kw = {k: spec[k] for k in CUSTOM_SPEC_KEYS if spec.get(k) is not None}
        return load_custom(content, f, **kw)
    kw = {k: spec[k] for k in BUILTIN_SPEC_KEYS if spec.get(k) is not None}
    return load_task(spec["name"], split_version=spec.get("split_version", 1), **kw)


def list_tasks() -> list[TaskInfo]:
    """The built-in tasks with their default split sizes."""
    return [load_task(name).info() for name in BUILTIN_TASKS]


# ---------------------------------------------------------------- custom files


def read_table(data: bytes, filename: str, *, max_bytes: int = MAX_BYTES, max_rows: int = MAX_ROWS,
               header: bool | None = True) -> "pandas.DataFrame":
    """A CSV/TSV/JSONL/JSON file as a DataFrame of strings (see core.tables); TaskError if unusable."""
    try:
        return tables.read_table(data, filename, max_bytes=max_bytes, max_rows=max_rows, header=header)
    except tables.TableError as e:
        raise TaskError(str(e)) from None


def _parse_choices(cell: str) -> dict[str, str] | None:
    """Options from a JSON object {"A": "..."}, a JSON list (lettered A, B, ...) or "A: text | B: text"."""
    text = cell.strip()
    if text.startswith(("{", "[")):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None
        if isinstance(value, list):
            value = {chr(65 + i): v for i, v in enumerate(value[:26])}
        if not isinstance(value, dict):
            return None
        opts = {str(k).strip(): cell_text(v).strip() for k, v in value.items()}
    else:
        opts = {}
        for part in text.split("|"):
            mt = re.match(r"\s*([^:.)\s]{1,10})\s*[:.)]\s*(.+)", part, re.DOTALL)
            if not mt:
                return None
            opts[mt.group(1)] = mt.group(2).strip()
    return opts if len(opts) >= 2 and all(k and v for k, v in opts.items()) else None


def _number(v: str) -> float | None:
    try:
        x = float(v)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _merge_numbers(raw: list[str], col: str, notices: list[str]) -> list[str]:
    """Numeric labels written differently ('1', '1.0') as one spelling, with a notice."""
    nums = [_number(v) for v in raw]
    if any(x is None for x in nums):
        return raw
    spellings: dict[float, list[str]] = {}
    for v, x in zip(raw, nums):
        if v not in spellings.setdefault(x, []):
            spellings[x].append(v)
    merged = {x: vs for x, vs in spellings.items() if len(vs) > 1}
    if not merged:
        return raw
    canon = {x: (str(int(x)) if x.is_integer() else min(vs, key=len)) for x, vs in spellings.items()}
    shown = "; ".join(f"{', '.join(repr(v) for v in vs)} -> '{canon[x]}'" for x, vs in list(merged.items())[:5])
    notices.append(f"Labels in column '{col}' that are the same number written differently became one class: {shown}.")
    return [canon[x] for x in nums]


def _threshold(raw: list[str], t: float, labels: list[str] | None, col: str, where,
               notices: list[str]) -> tuple[list[str], list[str]]:
    """Scores split into two classes: below t and at or above t."""
    if not math.isfinite(t):
        raise TaskError(f"The label threshold must be a finite number, got {t!r}.")
    names = [str(x).strip() for x in labels] if labels else ["0", "1"]
    if len(names) != 2 or names[0] == names[1] or "" in names:
        raise TaskError("With a label threshold, declare exactly two labels: below the threshold, then at or above it.")
    out = []
    for i, v in enumerate(raw):
        x = _number(v)
        if x is None:
            raise TaskError(f"Column '{col}' at {where(i)} holds '{v[:40]}', not a number; a label threshold needs "
                            "a number in every row.")
        out.append(names[x >= t])
    high = out.count(names[1])
    if high in (0, len(out)):
        raise TaskError(f"Every score in column '{col}' is {'below' if not high else 'at or above'} the threshold {t:g}: "
                        "that leaves one class; choose another threshold.")
    notices.append(f"Scores in column '{col}' thresholded at {t:g}: {len(out) - high} row(s) below -> '{names[0]}', "
                   f"{high} at or above -> '{names[1]}'.")
    return names, out


def _too_many(raw: list[str], distinct: list[str], col: str) -> str:
    """Why a column with too many distinct values is not a label column."""
    nums = [_number(v) for v in distinct]
    if all(x is not None for x in nums) and all(0 <= x <= 1 for x in nums):
        return (f"Column '{col}' holds {len(distinct)} distinct numbers between 0 and 1 "
                f"(e.g. {', '.join(distinct[:3])}): these look like continuous scores, not class labels; "
                "threshold them into two classes (CLI --label-threshold 0.5, app: 'Threshold scores at').")
    if len(distinct) >= len(raw) / 2 or sum(map(len, distinct)) / len(distinct) > 40:
        return (f"Column '{col}' has {len(distinct):,} distinct values in {len(raw):,} rows: this looks like free "
                f"text, not a label; a label column needs between 2 and {MAX_LABELS} distinct values "
                "(is it the right column?).")
    return (f"Column '{col}' has {len(distinct)} distinct value(s); a label column needs between 2 and "
            f"{MAX_LABELS} (is it the right column?).")


def _check_labels(raw: list[str], labels: list[str] | None, col: str, where,
                  notices: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(task labels, each row's label spelled as in task labels)."""
    notices = [] if notices is None else notices
    if labels is not None:
        labels = [str(x).strip() for x in labels]
        canon = {x.lower(): x for x in labels}
        if len(labels) < 2 or "" in canon or len(canon) != len(labels):
            raise TaskError("Declare at least two distinct, non-empty labels.")
        by_number = {_number(x): x for x in labels if _number(x) is not None}
        raw = [canon.get(v.lower()) or by_number.get(_number(v), v) for v in raw]
        bad = list(dict.fromkeys(v for v in raw if v.lower() not in canon))
        if bad:
            shown = ", ".join(f"'{v}'" for v in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise TaskError(f"Column '{col}' has labels outside the declared ones ({', '.join(labels)}): {shown}.")
        return labels, [canon[v.lower()] for v in raw]
    raw = _merge_numbers(raw, col, notices)
    distinct = sorted(set(raw))  # text order, as before: existing sessions keep their label order and template
    if len(distinct) > MAX_LABELS:
        raise TaskError(_too_many(raw, distinct, col))
    folded: dict[str, str] = {}
    for v in distinct:
        if v.lower() in folded:
            raise TaskError(f"Labels '{folded[v.lower()]}' and '{v}' in column '{col}' differ only in case; make them consistent.")
        folded[v.lower()] = v
    if len(distinct) < 2:
        raise TaskError(f"Column '{col}' has {len(distinct)} distinct value(s); a label column needs between 2 and "
                        f"{MAX_LABELS} (is it the right column?).")
    nums = [_number(v) for v in distinct]
    if all(x is not None and 0 <= x <= 1 for x in nums) and any(x not in (0, 1) for x in nums):
        notices.append(f"Column '{col}' looks like scores between 0 and 1; its {len(distinct)} values are used as "
                       "classes. To make two classes, set a label threshold (CLI --label-threshold 0.5).")
    return distinct, raw


def _letter_options(opts: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Options keyed A, B, C ... (kept if already so), and a map from each original key (lowercased) to its letter."""
    keys = list(opts)
    letters = [chr(65 + i) for i in range(len(keys))]
    if [k.upper() for k in keys] == letters:
        return {k.upper(): v for k, v in opts.items()}, {k.lower(): k.upper() for k in keys}
    return dict(zip(letters, opts.values())), {k.lower(): L for k, L in zip(keys, letters)}


def _gold_letter(gold: str, opts: dict[str, str], keymap: dict[str, str]) -> str | None:
    """The letter a gold answer names: an option key, its letter, or the option's exact text."""
    g = gold.strip().lower()
    if g in keymap:
        return keymap[g]
    if g.upper() in opts:
        return g.upper()
    hits = [L for L, v in opts.items() if v.strip().lower() == g]
    return hits[0] if len(hits) == 1 else None


def load_custom(data: bytes, filename: str, *, input_cols: list[str], label_col: str, id_col: str | None = None,
                choices_col: str | None = None, labels: list[str] | None = None, val_size: int = 50,
                test_size: int = 100, seed: int = 0, header: bool = True, option_cols: list[str] | None = None,
                label_threshold: float | None = None) -> Task:
    """A Task from an uploaded CSV/JSONL file, fully validated (raises TaskError, never half-loads).
    header=False numbers columns "1", "2", ...; option_cols: one column per MCQ option (lettered A, B, ...);
    label_threshold: numeric scores become two classes (below / at or above)."""
    name = Path(filename).name
    df = read_table(data, filename, header=header)
    fmt = df.attrs["format"]
    option_cols = list(option_cols or [])
    notices: list[str] = []
    if not input_cols:
        raise TaskError("Choose at least one input column.")
    if option_cols and choices_col:
        raise TaskError("Use either an options column or option columns (one per option), not both.")
    if option_cols and len(option_cols) < 2:
        raise TaskError("Choose at least two option columns (one per option).")
    if option_cols and label_threshold is not None:
        raise TaskError("A label threshold does not apply to multiple-choice answers.")
    roles: dict[str, str] = {}
    for col, role in [(c, "input") for c in input_cols] + [(label_col, "label"), (id_col, "id"), (choices_col, "options")] \
            + [(c, "option") for c in option_cols]:
        if col is None:
            continue
        if col in roles:
            raise TaskError(f"Column '{col}' is mapped twice (as {roles[col]} and as {role}); give each column one role.")
        roles[col] = role
        if col not in df.columns:
            hint = ""
            if fmt.delimiter and fmt.header and not fmt.header_guess:
                hint = (" Row 1 looks like data, not column names: load the file without a header "
                        "(CLI --no-header, app: untick 'First row is a header') and number the columns from 1.")
            elif fmt.delimiter and not fmt.header:
                hint = " Without a header the columns are numbered from 1."
            cols = list(map(str, df.columns))
            shown = ", ".join(cols[:12]) + (f" and {len(cols) - 12} more" if len(cols) > 12 else "")
            raise TaskError(f"Column '{col}' is not in {name}; available columns: {shown}.{hint}")
        if role == "input" and (re.search(r"[{}\n]", col) or ((choices_col or option_cols) and col == "options")):
            raise TaskError(f"Input column name '{col}' cannot be used in the template; rename the column.")
    numbers, word = df.attrs["row_numbers"], df.attrs["row_word"]

    def where(i: int) -> str:
        return f"{word} {numbers[i]}"

    for col in [*input_cols, label_col] + ([id_col] if id_col else []):
        empty = [i for i, v in enumerate(df[col]) if not v.strip()]
        if empty:
            raise TaskError(f"Column '{col}' has {len(empty)} empty cell(s), the first at {where(empty[0])}; "
                            "fill them or remove those rows.")
    raw_labels = [v.strip() for v in df[label_col]]
    choices: list[dict[str, str] | None] = [None] * len(df)
    if option_cols:
        cells_by_col = [[v.strip() for v in df[c].tolist()] for c in option_cols]
        for i in range(len(df)):
            opts = {chr(65 + j): cells[i] for j, cells in enumerate(cells_by_col) if cells[i]}
            if len(opts) < 2:
                raise TaskError(f"The option columns have fewer than two filled options at {where(i)}.")
            choices[i] = opts
        keymaps = [{c.lower(): chr(65 + j) for j, c in enumerate(option_cols)} for _ in choices]
        notices.append("Options from columns " + ", ".join(f"'{c}' as {chr(65 + j)}" for j, c in enumerate(option_cols))
                       + ".")
    elif choices_col:
        keymaps = []
        relettered = False
        for i, cell in enumerate(df[choices_col]):
            parsed = _parse_choices(cell)
            if parsed is None:
                raise TaskError(f"Options in column '{choices_col}' at {where(i)} are not a JSON object "
                                "like {\"A\": \"...\", \"B\": \"...\"}, a JSON list or 'A: ... | B: ...'.")
            choices[i], keymap = _letter_options(parsed)
            relettered = relettered or list(parsed) != list(choices[i])
            keymaps.append(keymap)
        if relettered:
            notices.append(f"Options in column '{choices_col}' are shown to the model lettered A, B, C, ... "
                           f"and the answers in '{label_col}' are read as those letters.")
    if option_cols or choices_col:
        letters = [_gold_letter(g, c, k) for g, c, k in zip(raw_labels, choices, keymaps)]
        bad = [i for i, x in enumerate(letters) if x is None]
        if bad:
            i = bad[0]
            raise TaskError(f"{len(bad)} label(s) in column '{label_col}' are not one of their row's options, the first "
                            f"at {where(i)}: '{raw_labels[i]}' (options {', '.join(choices[i])}).")
        raw_labels = letters
        if labels is None:
            labels = sorted({k for c in choices for k in c}, key=lambda k: (len(k), k))
        task_labels, gold = _check_labels(raw_labels, labels, label_col, where, notices)
    elif label_threshold is not None:
        task_labels, gold = _threshold(raw_labels, float(label_threshold), labels, label_col, where, notices)
    else:
        task_labels, gold = _check_labels(raw_labels, labels, label_col, where, notices)
    ids = [v.strip() for v in df[id_col]] if id_col else [f"{word}-{n}" for n in numbers]
    first_seen: dict[str, int] = {}
    for i, x in enumerate(ids):
        if x in first_seen:
            raise TaskError(f"Duplicate id '{x}' in column '{id_col}' ({where(first_seen[x])} and {where(i)}); "
                            "ids must be unique.")
        first_seen[x] = i
    for what, value in (("validation", val_size), ("test", test_size)):
        _check_size(what, value)
    need = val_size + test_size + 1
    if len(ids) < need:
        raise TaskError(f"{name} has {len(ids)} rows, but validation {val_size} + test {test_size} + at least 1 "
                        f"training row needs {need}; lower the validation or test size.")
    # one column access per input column: each df[c] deep-copies df.attrs (the row numbers), so a per-cell
    # df[c].iat[i] is quadratic (1,000 rows took 1.5 s; 50,000 would take hours)
    cells = {c: [v.strip() for v in df[c].tolist()] for c in input_cols}
    examples = [
        Example(id=ids[i], inputs={c: cells[c][i] for c in input_cols}, label=gold[i], choices=choices[i])
        for i in range(len(ids))
    ]
    order = seeded_order(examples, seed)
    blocks = [f"{c}:\n{{{c}}}" for c in input_cols] + (["Options:\n{options}"] if choices_col or option_cols else [])
    return Task(
        name=f"custom:{name}",
        title=name,
        description=f"Custom task from {name}: {len(examples)} examples labelled {', '.join(task_labels)}.",
        labels=task_labels,
        template="\n\n".join(blocks + [answer_instruction(task_labels)]),
        splits={"train": order[val_size + test_size:], "val": order[test_size:test_size + val_size],
                "test": order[:test_size]},
        source=f"Uploaded file {name}.",
        notices=notices,
        file_format=fmt.describe(),
    )


def load_task_from_path(path: str, **kwargs) -> Task:
    """load_custom on a file read from disk."""
    p = Path(path)
    if not p.is_file():
        raise TaskError(f"File not found: {path}.")
    if p.stat().st_size > MAX_BYTES:
        raise TaskError(f"{p.name} is {p.stat().st_size / 2**20:.1f} MB; the size limit is {MAX_BYTES / 2**20:.0f} MB.")
    return load_custom(p.read_bytes(), p.name, **kwargs)
