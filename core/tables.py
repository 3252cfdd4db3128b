"""Reading uploaded tables (CSV, TSV, JSONL, JSON arrays) into DataFrames of text, with clear errors."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

MAX_BYTES = 50 * 1024 * 1024
MAX_ROWS = 50_000


class TableError(ValueError):
    """A file that cannot be read as a table; the message is one sentence for the user."""


DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


@dataclass
class TableFormat:
    """How a file was read: delimiter (None for JSON), whether row 1 was a header, and the guess for it."""

    encoding: str
    delimiter: str | None = None
    header: bool = True
    header_guess: bool = True

    def describe(self) -> str:
        """One line such as 'semicolon-separated, no header row (columns numbered from 1), UTF-8'."""
        if self.delimiter is None:
            return f"JSON records, {self.encoding}"
        head = "first row is the header" if self.header else "no header row (columns numbered from 1)"
        guess = "" if self.header == self.header_guess else \
            f" (row 1 looks like {'a header' if self.header_guess else 'data'})"
        return f"{DELIMITERS[self.delimiter]}-separated, {head}{guess}, {self.encoding}"


def _encoding_name(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16"
    return "UTF-8 with BOM" if data.startswith(b"\xef\xbb\xbf") else "UTF-8"


def detect_delimiter(text: str) -> str:
    """The delimiter among , ; tab | that splits the first lines into the same number (> 1) of fields."""
    lines = text[:65536].splitlines()[:30] or [""]
    best, best_score = ",", (-1, 0)
    for d in DELIMITERS:
        counts = [len(r) for r in csv.reader(lines, delimiter=d) if r]
        if not counts or counts[0] < 2:
            continue
        score = (sum(c == counts[0] for c in counts), counts[0])
        if score > best_score:
            best, best_score = d, score
    return best


def _is_number(v: str) -> bool:
    try:
        float(v.replace(",", "")) if v.strip() else None
        return bool(v.strip())
    except ValueError:
        return False


def guess_header(rows: list[list[str]]) -> bool:
    """Whether row 1 looks like column names: votes per column (numbers under a word, a label-like column
    whose first cell is not one of its values, long text in row 1 means data)."""
    if len(rows) < 2:
        return True
    first, rest = rows[0], rows[1:51]
    named = [c.strip() for c in first if c.strip()]
    if len(set(named)) < len(named):
        return False  # column names are unique
    votes = 0
    for j, cell in enumerate(first):
        col = [r[j].strip() for r in rest if j < len(r) and r[j].strip()]
        cell = cell.strip()
        if not col:
            continue
        if len(cell) > 60:
            votes -= 1
        elif all(_is_number(v) for v in col):
            votes += -1 if _is_number(cell) else 1
        elif len(col) >= 6 and len(set(col)) <= len(col) // 3:
            votes += -1 if cell in set(col) else 1
    if not all(c.strip() for c in first):
        votes -= 1
    return votes >= 0


def _decode(data: bytes, filename: str) -> str:
    """Text of an uploaded file: UTF-8 (with or without BOM) or UTF-16 with BOM."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise TableError(f"{filename} starts like UTF-16 text but cannot be decoded; save it as UTF-8.") from None
    if b"\x00" in data:  # valid UTF-8 to a decoder, but no text table has NUL bytes
        head = data[:65536]
        even, odd = head[0::2].count(0) / max(1, len(head[0::2])), head[1::2].count(0) / max(1, len(head[1::2]))
        utf16 = (odd > 0.4 and even < 0.1) or (even > 0.4 and odd < 0.1)  # ASCII text as UTF-16: every other byte
        what = "UTF-16 text without a byte-order mark" if utf16 else "a binary file, not text"
        raise TableError(f"{filename} contains NUL bytes: it looks like {what}. Save it as UTF-8 "
                         "(in Excel: \"CSV UTF-8\").")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise TableError(
            f"{filename} is not UTF-8 text: byte 0x{data[e.start]:02x} at line {line} (byte offset {e.start}) "
            "is invalid; save the file with UTF-8 encoding (in Excel: \"CSV UTF-8\")."
        ) from None


def cell_text(value: object) -> str:
    """A JSON value as cell text (objects and lists as JSON)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, bool)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _read_json_records(text: str, filename: str, max_rows: int) -> tuple[list[dict], list[int], str]:
    """Records of a JSON array or JSON-lines text, with their line/record numbers."""
    if filename.lower().endswith(".json") and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise TableError(f"{filename} is not valid JSON: {e.msg} at line {e.lineno}.") from None
        if not all(isinstance(r, dict) for r in items):
            raise TableError(f"{filename} must be a JSON array of objects (one object per example).")
        if len(items) > max_rows:
            raise TableError(f"{filename} has more than {max_rows:,} records; the limit is {max_rows:,}.")
        return items, list(range(1, len(items) + 1)), "record"
    records, numbers = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise TableError(f"Line {n} of {filename} is not valid JSON ({e.msg}).") from None
        if not isinstance(record, dict):
            raise TableError(f"Line {n} of {filename} is not a JSON object; each line must be one {{...}} record.")
        if len(records) >= max_rows:
            raise TableError(f"{filename} has more than {max_rows:,} rows; the limit is {max_rows:,}.")
        records.append(record)
        numbers.append(n)
    return records, numbers, "line"


def _read_csv(text: str, filename: str, sep: str, max_rows: int,
              header: bool | None = True) -> tuple[list[str], list[list[str]], list[int], bool, bool]:
    """Header, rows and spreadsheet row numbers of CSV/TSV text; every cell kept as text."""
    import pandas as pd

    try:
        raw = pd.read_csv(io.StringIO(text), sep=sep, header=None, dtype=str, keep_default_na=False,
                          na_filter=False, skip_blank_lines=False, nrows=max_rows + 2, engine="c")
    except pd.errors.EmptyDataError:
        raise TableError(f"{filename} is empty.") from None
    except (pd.errors.ParserError, ValueError) as e:
        detail = str(e).strip().splitlines()[-1].removeprefix("Error tokenizing data. C error: ")
        raise TableError(f"Could not read {filename} as a table: {detail}.") from None
    rows = [["" if not isinstance(v, str) else v for v in r] for r in raw.itertuples(index=False)]
    guess = guess_header([r for r in rows if any(c.strip() for c in r)])
    if header is None:
        header = guess
    if header:
        names, body, start = [h.strip() for h in rows[0]], rows[1:], 2  # spreadsheet row numbers (header = row 1)
    else:
        names, body, start = [str(j + 1) for j in range(len(rows[0]))], rows, 1
    numbers = [i + start for i in range(len(body))]
    keep = [(r, n) for r, n in zip(body, numbers) if any(c.strip() for c in r)]
    if len(keep) > max_rows:
        raise TableError(f"{filename} has more than {max_rows:,} rows; the limit is {max_rows:,}.")
    return names, [r for r, _ in keep], [n for _, n in keep], header, guess


def read_table(data: bytes, filename: str, *, max_bytes: int = MAX_BYTES, max_rows: int = MAX_ROWS,
               header: bool | None = True) -> "pandas.DataFrame":
    """A CSV/TSV/JSONL/JSON file as a DataFrame of strings; df.attrs["row_numbers"] maps rows to file rows/lines,
    df.attrs["format"] is its TableFormat. header=False numbers the columns "1", "2", ...; None guesses."""
    import pandas as pd

    name = Path(filename).name or "the file"
    ext = Path(name).suffix.lower()
    if ext not in (".csv", ".tsv", ".jsonl", ".json", ".txt"):
        raise TableError(f"Unsupported file type '{ext or name}'; upload a .csv, .tsv, .jsonl or .json file.")
    if len(data) > max_bytes:
        raise TableError(f"{name} is {len(data) / 2**20:.1f} MB; the size limit is {max_bytes / 2**20:.0f} MB.")
    text = _decode(data, name)
    if not text.strip():
        raise TableError(f"{name} is empty.")
    if ext in (".jsonl", ".json"):
        records, numbers, word = _read_json_records(text, name, max_rows)
        columns = list(dict.fromkeys(k for r in records for k in r))
        df = pd.DataFrame({c: [cell_text(r.get(c)) for r in records] for c in columns}, dtype=object)
        fmt = TableFormat(_encoding_name(data))
    else:
        sep = "\t" if ext == ".tsv" else detect_delimiter(text)
        header, rows, numbers, used, guess = _read_csv(text, name, sep, max_rows, header)
        fmt = TableFormat(_encoding_name(data), sep, used, guess)
        word = "row"
        cols: list[str] = []
        for j, h in enumerate(header):
            h = h or f"column {j + 1}"
            if h in cols:
                raise TableError(f"Column name '{h}' appears more than once in the header of {name}; names must be unique "
                                 "(if row 1 is data, load the file without a header).")
            cols.append(h)
        df = pd.DataFrame(rows, columns=cols, dtype=object)
        empty = [c for c, h in zip(cols, header) if not h and not any(v.strip() for v in df[c])]
        df = df.drop(columns=empty)
    if df.empty or not len(df.columns):
        raise TableError(f"{name} has no data rows.")
    df.attrs["row_numbers"], df.attrs["row_word"], df.attrs["format"] = numbers, word, fmt
    return df
