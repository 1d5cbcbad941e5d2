"""Sphinx extension: rebuild the pages that read result records when the records change.

Sphinx re-reads a page only when its source changed; the results page and the method pages
read ``results/`` at execution time, so a new sweep would otherwise leave them stale. This
extension compares the newest modification time under ``results/`` with the one seen at the
last build and marks those pages outdated when it moved (they are also executed with
``execution_mode: force``, bypassing the execution cache).
"""

from __future__ import annotations

from pathlib import Path


def _newest(root: Path) -> float:
    times = [p.stat().st_mtime for p in root.rglob("*.json") if ".staging" not in p.parts]
    return max(times, default=0.0)


def _outdated(app, env, added, changed, removed):
    stamp = _newest(Path(app.srcdir) / "results")
    if getattr(env, "pqlib_results_stamp", None) == stamp:
        return []
    env.pqlib_results_stamp = stamp
    return [d for d in env.found_docs if any(d.startswith(p) for p in app.config.pqlib_results_docs)]


def setup(app):
    app.add_config_value("pqlib_results_docs", ["book/results", "book/methods/"], "env")
    app.connect("env-get-outdated", _outdated)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
