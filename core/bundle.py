"""One-file exports of a session: the JSON bundle (replayable offline, no key) and a Markdown report."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .bundle_integrity import content_hashes, first_difference, first_modification
from . import events as E
from .bundle_schema import RESPONSE, SchemaError, check_config, parse_json
from .event_log import EventLog
from .cache import ResponseCache, cache_key
from .llm import Completion, ModelSpec, Request
from .report import markdown_report  # noqa: F401 - the report lives beside the bundle for callers
from .runner import Runner
from .session import (PRESETS, Models, Session, SessionConfig, SessionError, load_session_task, new_session_id,
                      sessions_root)
from .state import EventDoesNotFit, SessionState, fold

FORMAT = "prompt-gradient-studio/bundle"
VERSION = 1
MAX_BUNDLE_BYTES = 200 * 1024 * 1024
_KEY = re.compile(r"^[0-9a-f]{64}$")


class BundleError(ValueError):
    """A bundle that cannot be imported; nothing was written."""


def used_keys(session: Session) -> list[str]:
    seen, out = set(), []
    for ev in session.events:
        keys = ev.get("keys")
        for k in keys if isinstance(keys, list) else []:
            if isinstance(k, str) and k not in seen:
                seen.add(k)
                out.append(k)
    return out


def export_bundle(session: Session, cache: ResponseCache | None) -> dict:
    """Events, every LLM response the session used (from the cache), and custom data if any."""
    keys = used_keys(session)
    responses = cache.export(keys) if cache is not None else {}
    data = None
    spec = session.config.task
    if "file" in spec:
        data = {"filename": spec["file"], "content": (session.dir / spec["file"]).read_text("utf-8", errors="replace")}
    return {"format": FORMAT, "version": VERSION, "session": session.id, "exported_at": time.time(),
            "events": session.events, "responses": responses, "data": data,
            "missing_responses": len(keys) - len(responses),
            "hashes": content_hashes(session.events, responses, data)}


def bundle_bytes(session: Session, cache: ResponseCache | None) -> bytes:
    return json.dumps(export_bundle(session, cache), ensure_ascii=False).encode("utf-8")


def _checked(data: bytes) -> tuple[dict, list[dict]]:
    """Parse and validate a bundle's structure and every field's type; BundleError with one clear line.
    Returns the bundle as exported (its content hashes cover that) and its events in the current schema."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"The bundle is {len(data) / 2**20:.0f} MB; the limit is {MAX_BUNDLE_BYTES / 2**20:.0f} MB.")
    try:
        b = parse_json(data.decode("utf-8"))
    except SchemaError as exc:
        raise BundleError(f"This bundle cannot be read: {exc}.") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"This file is not a JSON bundle ({type(exc).__name__}).") from None
    if not isinstance(b, dict) or b.get("format") != FORMAT:
        raise BundleError("This JSON file is not a Prompt Gradient Studio bundle (no 'format' marker).")
    if b.get("version") != VERSION:
        raise BundleError(f"Bundle version {b.get('version')!r:.40} is not supported (this app reads version {VERSION}).")
    events = b.get("events")
    if not isinstance(events, list) or not events:
        raise BundleError("The bundle has no events.")
    for i, ev in enumerate(events):
        if not isinstance(ev, dict) or not isinstance(ev.get("type"), str) or ev["type"] not in E.EVENTS:
            raise BundleError(f"Event {i + 1} of the bundle is not a known event.")
    if events[0]["type"] != E.CREATED or not isinstance(events[0].get("config"), dict):
        raise BundleError("The bundle's first event is not a session creation.")
    try:
        events = E.upgrade(events)  # a copy: the hashes are checked on the events as exported
    except SchemaError as exc:
        raise BundleError(f"This bundle cannot be read: {exc}.") from None
    for i, ev in enumerate(events):
        try:
            E.check(ev, "")
        except SchemaError as exc:
            raise BundleError(f"Event {i + 1} ('{ev['type']}') of the bundle is malformed: {exc}.") from None
    if any(ev["type"] == E.CREATED for ev in events[1:]):
        raise BundleError("The bundle holds more than one session creation.")
    raw_cfg = events[0]["config"]
    try:
        preset = PRESETS.get(raw_cfg.get("method"), {}).get(raw_cfg.get("preset")) if isinstance(
            raw_cfg.get("method"), str) and isinstance(raw_cfg.get("preset"), str) else None
        check_config(raw_cfg, asdict(preset) if preset is not None else None)
        cfg = SessionConfig.from_json(raw_cfg)
        cfg.check(check_models=False)  # replay needs no provider; import checks again when a model is used
    except (TypeError, SessionError, SchemaError) as exc:
        raise BundleError(f"The bundle's session settings are invalid: {exc}") from None
    responses = b.get("responses", {})
    if not isinstance(responses, dict):
        raise BundleError("The bundle's responses are not a mapping.")
    for k, v in responses.items():
        try:
            if not (isinstance(k, str) and _KEY.match(k)):
                raise SchemaError("its key is not a cache key")
            RESPONSE.check(v, "")
        except SchemaError as exc:
            raise BundleError(f"The bundle holds a malformed response entry ({exc}).") from None
    data_ = b.get("data")
    if data_ is not None:
        if not (isinstance(data_, dict) and isinstance(data_.get("content"), str) and isinstance(data_.get("filename"), str)):
            raise BundleError("The bundle's data section is malformed.")
        if "file" not in cfg.task:
            raise BundleError("The bundle carries data but its task does not use a file.")
    elif "file" in cfg.task:
        raise BundleError("The bundle's task needs its data file, which is missing.")
    return b, events


def _refuse_if_modified(b: dict) -> None:
    why = first_modification(b)
    if why:
        raise BundleError(f"The bundle was modified after export: {why}; nothing was imported or run.")


def load_bundle(data: bytes) -> dict:
    """Parse and validate a bundle, and check it against the content hashes written at export (if any)."""
    b, _ = _checked(data)
    _refuse_if_modified(b)
    return b


def _check_loaded(s: SessionState) -> None:
    """What the events must add up to: every accepted step carries its validation."""
    for st in s.steps:
        if st.outcome == "accepted" and (st.gate is None or st.candidate_report is None):
            raise BundleError(f"The bundle's events do not load: step {st.index} is accepted without a validation.")
        if st.decision and st.decision.get("action") in ("accept", "edit") and st.proposal is None:
            raise BundleError(f"The bundle's events do not load: step {st.index} is decided without a proposal.")


def import_bundle(data: bytes, *, root: Path | str | None = None, cache: ResponseCache | None = None) -> str:
    """Write the bundle as a new session under root (atomically) and its responses into the cache.
    A bundle that fails any check writes nothing: no session folder, no cache entry."""
    b, events = _checked(data)
    root = sessions_root(root)
    made_root = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=root))
    except OSError as exc:
        raise BundleError(f"Cannot write the sessions folder {root} ({exc.strerror or exc}).") from None
    sid = b.get("session") if isinstance(b.get("session"), str) else None
    if not sid or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,50}$", sid) or (root / sid).exists():
        sid = new_session_id()

    def discard() -> None:
        shutil.rmtree(tmp, ignore_errors=True)
        if made_root:
            try:
                root.rmdir()
            except OSError:
                pass

    try:
        if b.get("data"):
            safe = re.sub(r"[^A-Za-z0-9_.\-]", "_", Path(b["data"]["filename"]).name)[:80] or "data.csv"
            if safe != events[0]["config"]["task"]["file"]:
                raise BundleError("The bundle's data file name does not match its task.")
            (tmp / safe).write_text(b["data"]["content"], encoding="utf-8")
        checked = "checked" if b.get("hashes") is not None else "none (exported before content hashes)"
        events = [{**events[0], "imported": {"from_session": b.get("session"), "at": round(time.time(), 3),
                                             "hashes": checked, "events": len(events)}}] + events[1:]  # later events are the user's
        with open(tmp / "events.jsonl", "w", encoding="utf-8") as f:
            for ev in events:
                f.write(json.dumps(ev, ensure_ascii=False) + "\n")
        written = EventLog(tmp, sid).read(readonly=True, warnings=[])  # must load cleanly before it becomes visible
        try:
            probe = fold(written, load_session_task(written[0]["config"]["task"], tmp))
        except EventDoesNotFit as exc:
            raise BundleError(f"The bundle's events do not load: {exc}.") from None
        _check_loaded(probe)
        _refuse_if_modified(b)
        if cache is not None:
            for k, v in b.get("responses", {}).items():
                cache.put_raw(k, {"text": v["text"], "input_tokens": int(v.get("input_tokens", 0)),
                                  "output_tokens": int(v.get("output_tokens", 0)),
                                  "cost_usd": float(v.get("cost_usd", 0.0)), "model": str(v.get("model", "")),
                                  "finish_reason": str(v.get("finish_reason", ""))})
        tmp.rename(root / sid)
    except BundleError:
        discard()
        raise
    except OSError as exc:
        discard()
        raise BundleError(f"Cannot write the imported session under {root} ({exc.strerror or exc}); "
                          f"nothing was imported.") from None
    except Exception as exc:  # noqa: BLE001 - a bundle that does not load is refused whole
        discard()
        if type(exc).__name__ == "CacheError":
            raise BundleError(f"Cannot write the response cache ({exc}); nothing was imported.") from None
        raise BundleError(f"The bundle's events do not load: {exc}") from None
    return sid


class ReplayCache:
    """The bundle's responses, with the keys of calls that failed at this point of the session hidden (a call
    that failed and later succeeded on a retry replays as its failure first, then as its answer)."""

    def __init__(self, cache: ResponseCache):
        self.inner, self.hidden = cache, set()

    def get(self, key: str) -> Completion | None:
        return None if key in self.hidden else self.inner.get(key)

    def put(self, key: str, completion: Completion) -> bool:
        return self.inner.put(key, completion)


class OfflineModel:
    """Serves only what the cache holds; a miss is an error result, never a network call. A call the session
    recorded as failed replays as that same failure (its recorded error text); any other miss is counted and
    the first one named."""

    def __init__(self, spec: ModelSpec, failures: dict[str, str] | None = None, used: set[str] | None = None,
                 questions: dict[str, str] | None = None):
        self.spec = spec
        self.misses = 0
        self.replayed_failures = 0
        self.failures = failures if failures is not None else {}  # key -> recorded error, this phase first
        self.used = used if used is not None else set()  # keys the session used (failed ones have no response)
        self.questions = questions or {}  # rendered question -> its id, to name a missing forward call
        self.missing: list[str] = []

    async def acomplete(self, req: Request) -> Completion:
        key = cache_key(self.spec, req)
        if key in self.failures or key in self.used:
            self.replayed_failures += 1
            return Completion(error=self.failures.get(key, "failed in the session (no response recorded)"),
                              model=str(self.spec))
        self.misses += 1
        self.missing.append(_call_text(req, self.questions))
        return Completion(error="not in the bundle (replay is offline)", model=str(self.spec))

    async def aclose(self) -> None:
        return None


def _call_text(req: Request, questions: dict[str, str]) -> str:
    """A call in words: its template (or phase) and, for a forward call, its question id."""
    from .lineage import call_name

    user = next((c for r, c in reversed(req.messages) if r == "user"), "")
    qid = questions.get(user)
    what = call_name(req.tag) if req.tag and req.tag != "forward" else "forward call"
    return f"{what}" + (f" on question {qid}" if qid else "")


def _recorded_failures(events: list[dict]) -> tuple[dict[tuple[int, int], list[dict[str, str]]], dict[str, str]]:
    """Per (step, attempt), the failed calls (key -> error) of its proposal, then of each retry, in order; and
    every recorded failure by key."""
    plan: dict[tuple[int, int], list[dict[str, str]]] = {}
    every: dict[str, str] = {}
    attempt, pending = 0, {}
    for ev in events:
        t = ev.get("type")
        if t == E.STEP_STARTED:
            attempt, pending = ev["attempt"], {}
        elif t == E.FORWARD:
            pending = {r["key"]: r["error"] for rep in ev["reports"] for r in rep["rows"]
                       if r.get("error") and r.get("key")}
        elif t in (E.PROPOSAL_MADE, E.PROPOSAL_RETRIED):
            p = ev["proposal"]
            recs = list(p.get("calls", [])) + [x["call"] for x in p.get("gradients", []) + p.get("candidates", [])
                                               if x.get("call")]
            fails = {**(pending if t == E.PROPOSAL_MADE else {}),
                     **{r["key"]: r["error"] for r in recs if r.get("error") and r.get("key")}}
            runs = plan.setdefault((ev["step"], attempt), [])
            if t == E.PROPOSAL_MADE:
                runs.clear()  # a step re-run after a crash: its last proposal counts
            runs.append(fails)
            every.update(fails)
    return plan, every


@dataclass
class ReplayResult:
    session: str
    steps: list[dict] = field(default_factory=list)  # per step: recorded vs replayed validation, outcome
    baseline: tuple[float, float] = (0.0, 0.0)  # recorded, replayed
    misses: int = 0
    missing: list[str] = field(default_factory=list)  # the calls missing from the bundle, in words (first ones)
    failures_replayed: int = 0  # calls that failed in the session and replayed as the same recorded failure
    matches: bool = True
    first_difference: str | None = None  # the first recorded event the replay does not reproduce, in one line


def _reproducible(recorded: Session) -> list[dict]:
    """The recorded events a replay can reproduce: all but a last step cut off before its proposal."""
    last = recorded.steps[-1] if recorded.steps else None
    if last is None or last.outcome is not None or last.proposal is not None:
        return recorded.events
    cut = max(i for i, e in enumerate(recorded.events) if e["type"] == E.STEP_STARTED)
    return recorded.events[:cut]


def _reverts_by_step(events: list[dict]) -> dict[int, list[int]]:
    """The versions reverted to, by the step they followed (0: before the first step)."""
    out: dict[int, list[int]] = {}
    step = 0
    for ev in events:
        if ev["type"] == E.STEP_STARTED:
            step = ev["step"]
        elif ev["type"] == E.REVERTED:
            out.setdefault(step, []).append(ev["to_version"])
    return out


def _offline_spec(spec: str, base_url: str | None) -> ModelSpec:
    """The spec the recorded calls were keyed with, even for a provider this machine does not have."""
    from .llm import LLMError, parse_spec

    try:
        return parse_spec(spec, base_url)
    except LLMError:
        provider, _, model = spec.partition(":")
        return ModelSpec(provider.strip().lower(), model.strip(), (base_url or "").strip() or None)


def replay_bundle(data: bytes, *, root: Path | str | None = None) -> ReplayResult:
    """Re-run a bundle's session offline from its own responses, applying its recorded decisions."""
    b = load_bundle(data)
    work = Path(tempfile.mkdtemp(prefix="pgs-replay-"))
    try:
        cache = ResponseCache(work / "cache")
        rid = import_bundle(data, root=work / "recorded", cache=cache)
        recorded = Session.open(rid, root=work / "recorded", readonly=True)
        cfg = recorded.config
        plan, every = _recorded_failures(recorded.events)
        failing: dict[str, str] = {}
        used = {k for k in used_keys(recorded) if k not in b.get("responses", {})}
        questions = {recorded.task.render(ex): ex.id for split in recorded.task.splits.values() for ex in split}
        fwd = OfflineModel(_offline_spec(cfg.forward, cfg.forward_base_url), failing, used, questions)
        bwd = OfflineModel(_offline_spec(cfg.backward, cfg.backward_base_url), failing, used, questions)
        for mdl in (fwd, bwd):
            mdl.used = used
        replay_cache = ReplayCache(cache)
        models = Models(fwd, bwd, Runner(cache=replay_cache, concurrency=8))  # type: ignore[arg-type]
        cfg_copy = SessionConfig.from_json(recorded.events[0]["config"])
        content = None
        if b.get("data"):
            content = (b["data"]["filename"], b["data"]["content"].encode("utf-8"))
        replay = Session.create(cfg_copy, root=Path(root or work / "replayed"), models=models, data=content,
                                offline=True)
        out = ReplayResult(session=recorded.id)
        reverts = _reverts_by_step(recorded.events)

        marks = [(i, e) for i, e in enumerate(recorded.events) if e["type"] in E.PERSON_MARKS]

        def catch_up(kind: str | None = None, step: int | None = None, attempt: int | None = None,
                     last: bool = False) -> None:
            """Write the person's recorded marks (disputes, locks) that came before the recorded `kind` event
            of this step and attempt (the last such when `last`; every mark left when None), so the phase that
            follows sees them as the recording did."""
            at = [i for i, e in enumerate(recorded.events) if kind is not None and e["type"] == kind and (
                step is None or e.get("step") == step) and (attempt is None or e.get("attempt") == attempt)]
            before = (at[-1] if last else at[0]) if at else None
            if kind is None:  # the rest, up to where the replay can reproduce
                before = len(_reproducible(recorded))
            while marks and before is not None and marks[0][0] < before:
                ev = marks.pop(0)[1]
                replay.emit(E.parse({k: v for k, v in ev.items() if k not in ("ts", "spend", "keys")}))

        def point(*when) -> None:  # the servers the recorded calls went to (a 'repointed' event changes them)
            (f, fu), (bk, bu) = recorded.servers_when(*when)
            fwd.spec, bwd.spec = _offline_spec(f, fu), _offline_spec(bk, bu)

        def fail_as_recorded(fails: dict[str, str]) -> None:  # the calls that failed at this point fail again
            failing.clear()
            failing.update(fails)
            replay_cache.hidden = set(fails)

        def run_attempt(step: int, attempt: int) -> None:
            runs = plan.get((step, attempt)) or [{}]
            point(E.STEP_STARTED, step, attempt)
            catch_up(E.STEP_STARTED, step, attempt)
            fail_as_recorded(runs[0])
            replay.start_step(regenerate=attempt > 0)
            for fails in runs[1:]:
                fail_as_recorded(fails)
                replay.retry_failed()
            fail_as_recorded({})

        try:
            if recorded.versions:
                point(E.BASELINE)
                catch_up(E.BASELINE)
                replay.run_baseline()
                out.baseline = (recorded.versions[0].accuracy, replay.versions[0].accuracy)
            for v in reverts.get(0, []):
                replay.revert(v)
            for st in recorded.steps:
                if st.decision is None and st.outcome is None and st.proposal is None:
                    break  # a step cut off before its proposal: nothing of it to reproduce
                for attempt in range(st.attempt + 1):
                    run_attempt(st.index, attempt)
                if st.decision is None and st.outcome is None:
                    break  # proposed, not yet decided: the proposal is compared below
                d = st.decision or {}
                catch_up(E.DECISION, st.index, last=True)
                replay.decide(d["action"], candidate=d.get("candidate"),
                              prompt=d.get("prompt") if d["action"] == "edit" else None,
                              override=bool(d.get("override")))
                row = {"step": st.index, "action": d["action"], "recorded_outcome": st.outcome}
                if d["action"] in ("accept", "edit") and st.gate is not None:
                    point(E.VALIDATION, st.index)
                    catch_up(E.VALIDATION, st.index)
                    g = replay.validate()
                    gate_ev = next((e for e in recorded.events if e["type"] == E.GATE and e["step"] == st.index), None)
                    catch_up(E.GATE, st.index)
                    if gate_ev is not None:
                        replay.confirm(gate_ev["accepted"] if gate_ev.get("override") else None)
                    row.update(recorded_val=st.gate.new_accuracy, replayed_val=g.new_accuracy)
                row["replayed_outcome"] = replay.steps[-1].outcome
                out.steps.append(row)
                for v in reverts.get(st.index, []):
                    replay.revert(v)
                    out.steps.append({"step": st.index, "action": f"revert to version {v}",
                                      "recorded_outcome": "reverted", "replayed_outcome": "reverted"})
            catch_up()
        except SessionError as exc:
            out.matches = False
            out.steps.append({"error": str(exc)})
        finally:
            replay.close()
        out.misses = fwd.misses + bwd.misses
        out.missing = (fwd.missing + bwd.missing)[:5]
        out.failures_replayed = fwd.replayed_failures + bwd.replayed_failures
        out.first_difference = first_difference(_reproducible(recorded), replay.events)
        out.matches = out.matches and out.first_difference is None and out.misses == 0 and \
            out.baseline[0] == out.baseline[1] and all(
            s.get("recorded_val") == s.get("replayed_val") and s.get("recorded_outcome") == s.get("replayed_outcome")
            for s in out.steps)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)
