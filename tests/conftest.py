"""Shared test set-up: the scripted fake provider (`fake:<name>` specs) is registered for every test, in this
process by calling its `register()`, in subprocesses by the entry point in tests/plugins (subprocess_pythonpath)."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fake_model import register  # noqa: E402

register()
os.environ.setdefault("PGS_TEST", "1")

import shutil  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402

FAKE_PLUGIN_DIR = ROOT / "tests" / "plugins"  # pgs_test_fake-0.dist-info: the `fake` provider's entry point


def subprocess_pythonpath(fake_provider: bool = True) -> str:
    """PYTHONPATH for a `pgs` or Streamlit subprocess: this repo and, unless fake_provider=False (only the real
    providers), the test-only distribution whose entry point registers the fake provider."""
    parts = [str(ROOT)] + ([str(FAKE_PLUGIN_DIR)] if fake_provider else [])
    for p in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if p and p not in parts and Path(p).resolve() != FAKE_PLUGIN_DIR:
            parts.append(p)
    return os.pathsep.join(parts)


LOCAL_LLM = ROOT.parent / "shared" / "tools" / "local-llm"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def local_llm_url() -> str:
    """Base URL of the real local model (../shared/tools/local-llm). Required in CI; skipped elsewhere
    only when ../shared is absent."""
    if not LOCAL_LLM.exists():
        if IN_CI:
            pytest.fail(f"CI needs the real local model, but {LOCAL_LLM} is missing")
        pytest.skip(f"{LOCAL_LLM} is absent (no ../shared beside the repo)")
    out = subprocess.run(["bash", str(LOCAL_LLM), "start"], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        pytest.fail(f"local-llm start failed: {out.stderr[-2000:]}")
    return out.stdout.strip().splitlines()[-1]


LOCAL_MODEL = "openai-compatible:qwen2.5-coder-0.5b"


@pytest.fixture
def pgs_env(tmp_path, monkeypatch):
    """Isolated sessions and cache folders for a test, also for subprocesses."""
    monkeypatch.setenv("PGS_SESSIONS_DIR", str(tmp_path / "sessions"))
    monkeypatch.setenv("PGS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", subprocess_pythonpath())  # the fake provider for `pgs` subprocesses
    return tmp_path


def pgs_cmd() -> list[str]:
    exe = shutil.which("pgs")
    return [exe] if exe else [sys.executable, "-m", "core.cli"]


@pytest.fixture
def app_test_env(tmp_path, monkeypatch):
    """An AppTest run (in this process, so with the fake provider registered above), its own folders, jobs
    inline and no keys from the environment."""
    monkeypatch.setenv("PGS_SESSIONS_DIR", str(tmp_path / "sessions"))
    monkeypatch.setenv("PGS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PGS_INLINE_JOBS", "1")
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path
