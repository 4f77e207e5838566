"""The README holds what docs/benchmarks.md measured, once, and its commands run as a new user types them."""

import re

from benchmarks import readme_sync
from benchmarks.readme_sync import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_speed_summary_is_the_one_in_docs_benchmarks():
    docs = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    start, end = readme_sync.block(docs, "docs/benchmarks.md")
    assert "| " in docs[start:end]  # a table, not an empty block
    assert readme_sync.synced(README, docs) == README, "run python -m benchmarks.readme_sync"


def test_sync_replaces_only_the_block():
    readme = f"intro\n{readme_sync.START}\nold\n{readme_sync.END}\noutro\n"
    docs = f"x\n{readme_sync.START}\nnew | 1 |\n{readme_sync.END}\ny\n"
    assert readme_sync.synced(readme, docs) == f"intro\n{readme_sync.START}\nnew | 1 |\n{readme_sync.END}\noutro\n"


def test_every_shell_example_runs_inside_the_venv():
    # Without the venv, `python run_demo.py` ends in a raw ModuleNotFoundError traceback.
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    assert blocks
    for block in blocks:
        if re.search(r"(^|\s)python3? (run_demo\.py|-m )", block) and "python3 -m venv" not in block:
            assert "source .venv/bin/activate" in block or ".venv/bin/python" in block, block
