"""docs/distributed.md's scaling table is what its script prints (it cannot go stale)."""

from __future__ import annotations

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_scaling_table_matches_its_script():
    path = os.path.join(ROOT, "docs", "examples", "distributed_scaling.py")
    spec = importlib.util.spec_from_file_location("distributed_scaling", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with open(os.path.join(ROOT, "docs", "distributed.md")) as f:
        doc = f.read()
    begin = "<!-- distributed_scaling.py: begin -->\n"
    end = "\n<!-- distributed_scaling.py: end -->"
    table = doc[doc.index(begin) + len(begin):doc.index(end)]
    assert table == mod.table()
