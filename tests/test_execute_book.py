"""tools/execute_book.py: the book's notebooks executed side by side into the build's
jupyter-cache, where myst-nb finds them (so the build executes nothing again)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEADER = """# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---
"""


@pytest.fixture(scope="module")
def execute_book():
    spec = importlib.util.spec_from_file_location("execute_book", ROOT / "tools" / "execute_book.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # the pool pickles _execute
    spec.loader.exec_module(module)
    return module


def _myst_nb_read(path: Path):
    """The notebook exactly as the book's build reads it (myst-nb with _config.yml's reader)."""
    import yaml
    from myst_nb.core.config import NbParserConfig
    from myst_nb.core.read import create_nb_reader
    from myst_parser.config.main import MdParserConfig

    formats = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]["nb_custom_formats"]
    config = NbParserConfig(custom_formats={k: (v[0], v[1], False) for k, v in formats.items()})
    content = path.read_text()
    return create_nb_reader(str(path), MdParserConfig(), config, content).read(content)


def test_pages_are_executed_into_the_cache_the_build_reads(tmp_path, execute_book, capsys):
    from jupyter_cache import get_cache

    (tmp_path / "_config.yml").write_text("exclude_patterns:\n  - '*.ipynb'\nexecute:\n"
                                          "  timeout: 120\n  exclude_patterns:\n    - runs/*\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: page\n"
                                       "  - file: broken\n  - file: runs/one\n")
    (tmp_path / "intro.md").write_text("# Intro\n")
    (tmp_path / "runs").mkdir()
    page, broken, run = tmp_path / "page.py", tmp_path / "broken.py", tmp_path / "runs" / "one.py"
    page.write_text(HEADER + "\n# %%\nimport os\nprint(os.environ['OMP_NUM_THREADS'], 6 * 7)\n")
    broken.write_text(HEADER + "\n# %%\nraise ValueError('a page that fails')\n")
    run.write_text(HEADER + "\n# %%\nprint('never executed')\n")
    (tmp_path / "page.ipynb").write_text("{}")  # a twin the book excludes (not even read)
    assert execute_book.book_notebooks(tmp_path) == [page, broken]

    assert execute_book.main(["--root", str(tmp_path), "--workers", "2"]) == 0
    out, err = capsys.readouterr()
    assert "2 notebooks to execute" in out and "broken.py failed" in err and "a page that fails" in err
    cache = get_cache(str(tmp_path / "_build" / ".jupyter_cache"))
    record = cache.match_cache_notebook(_myst_nb_read(page))  # what the build will look up
    cells = cache.get_cache_bundle(record.pk).nb.cells
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert cells[0].outputs[0]["text"] == f"{threads} 42\n"
    for left_to_the_build in (broken, run):
        with pytest.raises(KeyError):
            cache.match_cache_notebook(_myst_nb_read(left_to_the_build))

    assert execute_book.main(["--root", str(tmp_path), "--workers", "1"]) == 0
    assert "1 notebooks to execute" in capsys.readouterr().out  # the page is not run again
