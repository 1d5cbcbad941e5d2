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


def _output(kind, text):
    """A cell output as myst-nb renders it: ``kind`` is 'stderr', 'stream' or 'text_plain'."""
    return (f'<div class="cell_output docutils container"><div class="output {kind} '
            f'highlight-myst-ansi notranslate"><div class="highlight"><pre><span></span>{text}'
            '</pre></div></div></div>')


def test_stderr_with_a_filesystem_path_fails_naming_page_and_text(tmp_path):
    warning = ("/work/main/.venv/lib/python3.12/site-packages/tqdm/auto.py:21: "
               "TqdmWarning: IProgress not found. Please update jupyter and ipywidgets.")
    site = _site(tmp_path, _output("stderr", warning))
    problems = check_book.static_problems(site)
    assert len(problems) == 1
    assert problems[0].startswith("index.html: shows stderr with a filesystem path")
    assert "TqdmWarning: IProgress not found" in problems[0]
    assert check_book.main([str(site), "--no-browser"]) == 1


def test_stderr_without_a_path_and_ordinary_outputs_pass(tmp_path):
    site = _site(tmp_path, _output("stderr", "decode s=0.7: 100%|##########| 10/10")
                 + _output("stream", "ratio 3/4 over train/test, see https://example.org/a/b")
                 + _output("text_plain", "{'latent': (10000, 256)}"))
    assert check_book.static_problems(site) == []
    assert check_book.main([str(site), "--no-browser"]) == 0


def test_any_text_showing_a_build_machine_path_fails(tmp_path):
    home, checkout = str(Path.home()), str(Path(__file__).resolve().parents[1])
    site = _site(tmp_path, _output("stream", f"weights in {home}/.cache/pqlib/prior.safetensors")
                 + f'<dl><dt>run(notebook=PosixPath(\'{checkout}/notebooks/experiment.py\'))</dt></dl>')
    assert check_book.static_problems(site) == [
        f"index.html: shows a path of the build machine: "
        f"'weights in {home}/.cache/pqlib/prior.safetensors'",
        f"index.html: shows a path of the build machine: "
        f"\"run(notebook=PosixPath('{checkout}/notebooks/experiment.py'))\""]


def test_other_paths_outside_stderr_and_scripts_pass(tmp_path):
    site = _site(tmp_path, '<div class="cell_input"><pre>open("/data/mnist/x.npz")</pre></div>'
                           f'<script>var root = "{Path.home()}/site-packages";</script>')
    assert check_book.static_problems(site) == []
