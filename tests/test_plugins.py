"""Provider plugins come from entry points (group prompt_gradient_studio.providers), never from an environment
variable; the fake provider exists in a subprocess only when the test-only distribution is on its path."""

from __future__ import annotations

import os
import subprocess

from core.llm import PLUGIN_GROUP
from tests.conftest import pgs_cmd, subprocess_pythonpath

EVALUATE = ["evaluate", "--task", "pubmedqa", "--model", "fake:x", "--limit", "2", "--json", "--quiet", "--no-cache"]


def pgs(pythonpath: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(pgs_cmd() + EVALUATE, capture_output=True, text=True, timeout=120,
                          env={**full, "PYTHONPATH": pythonpath, **env})


def test_the_fake_provider_is_there_only_through_the_test_entry_point(tmp_path):
    assert pgs(subprocess_pythonpath()).returncode == 0
    absent = pgs(subprocess_pythonpath(fake_provider=False))
    assert absent.returncode == 2 and absent.stderr.strip().splitlines() == [
        "pgs: error: Unknown provider 'fake' in 'fake:x'. Use one of: openai, anthropic, ollama, openai-compatible."]
    # the old loader imported whatever module this variable named; nothing reads it now
    ignored = pgs(subprocess_pythonpath(fake_provider=False), PGS_PROVIDERS="tests.fake_model:register")
    assert ignored.returncode == 2 and "Unknown provider 'fake'" in ignored.stderr


def test_a_plugin_that_fails_is_one_warning_line_naming_it(tmp_path):
    (tmp_path / "boom_plugin.py").write_text("def register():\n    raise RuntimeError('no\\nluck')\n")
    dist = tmp_path / "pgs_broken-1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pgs-broken\nVersion: 1\n")
    (dist / "entry_points.txt").write_text(f"[{PLUGIN_GROUP}]\nmissing = no_such_module_for_pgs:register\n"
                                           f"boom = boom_plugin:register\n")
    out = pgs(os.pathsep.join([str(tmp_path), subprocess_pythonpath()]))
    assert out.returncode == 0, out.stderr  # the working plugin (the fake) still loaded
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr
    assert sorted(lines) == [
        "pgs: warning: provider plugin 'boom' (boom_plugin:register) was not loaded: RuntimeError: no luck",
        "pgs: warning: provider plugin 'missing' (no_such_module_for_pgs:register) was not loaded: "
        "ModuleNotFoundError: No module named 'no_such_module_for_pgs'"], lines

