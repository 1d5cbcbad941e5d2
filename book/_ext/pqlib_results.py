"""Sphinx extension: pages that read result records, rebuilt when the records change.

- The ``pqlib-findings`` directive writes the introduction's "What we found" list from the
  reference run's records (``results/paper/*.json``) at build time, through
  :func:`pqlib.compare.findings`: no number in it is copied by hand.
- Sphinx re-reads a page only when its source changed; the results page, the method pages and
  the introduction read ``results/`` when they are built, so a new sweep would otherwise leave
  them stale. The newest modification time under ``results/`` is compared with the one seen at
  the last build and those pages are marked outdated when it moved (the notebooks among them
  are also executed with ``execution_mode: force``, bypassing the execution cache).
"""

from __future__ import annotations

from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective


def _newest(root: Path) -> float:
    times = [p.stat().st_mtime for p in root.rglob("*.json") if ".staging" not in p.parts]
    return max(times, default=0.0)


def _outdated(app, env, added, changed, removed):
    stamp = _newest(Path(app.srcdir) / "results")
    if getattr(env, "pqlib_results_stamp", None) == stamp:
        return []
    env.pqlib_results_stamp = stamp
    return [d for d in env.found_docs if any(d.startswith(p) for p in app.config.pqlib_results_docs)]


class Findings(SphinxDirective):
    """``{pqlib-findings}``: the summary of the reference run's records, as Markdown."""

    def run(self):
        import pandas as pd

        from pqlib import compare, results

        folder = Path(self.env.srcdir) / "results" / "paper"
        files = sorted(folder.glob("*.json"))
        for f in files:
            self.env.note_dependency(str(f))
        text = compare.findings(results.load_records(folder) if files else pd.DataFrame())
        node = nodes.container(classes=["pqlib-findings"])
        self.state.nested_parse(StringList(text.splitlines(), source=str(folder)), self.content_offset, node)
        return [node]


def setup(app):
    app.add_config_value("pqlib_results_docs", ["book/results", "book/methods/", "book/intro"], "env")
    app.connect("env-get-outdated", _outdated)
    app.add_directive("pqlib-findings", Findings)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
