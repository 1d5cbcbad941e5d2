"""The built-book checker fails on what a reader would see broken."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "check_book", Path(__file__).resolve().parent.parent / "tools" / "check_book.py")
check_book = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_book)


def _site(tmp_path, body):
    (tmp_path / "img.png").write_bytes(b"\x89PNG" + b"0" * 200)
    (tmp_path / "other.html").write_text('<html><h1 id="here">x</h1></html>')
    (tmp_path / "index.html").write_text(f"<html><body>{body}</body></html>")
    return tmp_path


def test_clean_site_passes(tmp_path):
    site = _site(tmp_path, '<img src="img.png"><a href="other.html#here">ok</a><a href="https://x.org">ext</a>')
    assert check_book.static_problems(site) == []


def test_missing_image_broken_link_bad_anchor_and_error_cell(tmp_path):
    site = _site(tmp_path, '<img src="gone.png"><a href="nope.html">x</a><a href="other.html#missing">y</a>'
                           '<div class="output traceback">Traceback (most recent call last)</div>')
    problems = "\n".join(check_book.static_problems(site))
    assert "missing image gone.png" in problems
    assert "broken link nope.html" in problems
    assert "missing anchor" in problems
    assert "error cell" in problems
