"""Check the built book as a reader would meet it.

    python tools/check_book.py [_build/html] [--screenshots DIR] [--pages index results ...]

Fails (exit 1) on
  * an <img> whose file is missing or empty (or an empty data: URI),
  * an internal link to a page or anchor that does not exist,
  * an executed cell that shows an error (traceback) in any page,
  * a stderr block that shows a filesystem path (a warning printed with its source file, as
    `.../site-packages/tqdm/auto.py:21: TqdmWarning: ...`),
  * any text that shows a path of the build machine (the checkout, the home folder,
    site-packages): in an output, a code cell or a rendered signature,
and renders the main pages in headless Chromium, saving screenshots and failing on a blank
page. Chromium comes from Debian's `chromium` package (`.ci/run` installs it).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

ERROR_MARKERS = ("Traceback (most recent call last)", 'class="output traceback"',
                 "cell_output error", "ename", "PapermillExecutionError")
# an absolute POSIX path of two or more parts (not a URL, not ~/...), or a Windows drive path
FILE_PATH = re.compile(r"(?<![\w.:/~-])(?:/[\w.+@-]+){2,}|\b[A-Za-z]:\\[\w.+ -]+\\")
BLOCKS = {"div", "p", "pre", "li", "dt", "dd", "tr", "td", "th", "br", "h1", "h2", "h3", "h4"}
MACHINE_PATHS = ("site-packages", f"{Path.home()}/", f"{Path(__file__).resolve().parents[1]}/")


class _Page(HTMLParser):
    """Images, links and ids of a page, its visible text and the text of its stderr blocks."""

    def __init__(self):
        super().__init__()
        self.images, self.links, self.ids = [], [], set()
        self.stderr = []  # the text of each stderr block
        self.text = []  # all visible text
        self._divs = []  # the open <div>s: "stderr" or None
        self._hidden = 0  # depth inside <script> / <style>

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img" and "src" in a:
            self.images.append(a["src"])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag in ("script", "style"):
            self._hidden += 1
        if tag in BLOCKS:
            self.text.append("\n")
        if tag == "div":
            stderr = "stderr" in (a.get("class") or "").split()
            if stderr:
                self.stderr.append("")
            self._divs.append("stderr" if stderr else None)

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._hidden = max(0, self._hidden - 1)
        if tag in BLOCKS:
            self.text.append("\n")
        if tag == "div" and self._divs:
            self._divs.pop()

    def handle_data(self, data):
        if "stderr" in self._divs:
            self.stderr[-1] += data
        if not self._hidden:
            self.text.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(errors="replace"))
    return page


def _line_with(text: str, found: str) -> str:
    line = next(line for line in text.splitlines() if found in line).strip()
    return line if len(line) <= 160 else line[:157] + "..."


def path_problems(page: _Page, machine_paths=MACHINE_PATHS) -> list[str]:
    """Stderr blocks that show a filesystem path; other text that shows a build-machine path."""
    problems, flagged = [], set()
    for block in page.stderr:
        if m := FILE_PATH.search(block):
            line = _line_with(block, m.group())
            flagged.add(line)
            problems.append(f"shows stderr with a filesystem path: {line!r}")
    text = "".join(page.text)
    for marker in machine_paths:
        lines = {_line_with(line, marker) for line in text.splitlines() if marker in line}
        problems += [f"shows a path of the build machine: {line!r}"
                     for line in sorted(lines - flagged)]
        flagged |= lines
    return problems


def static_problems(root: Path, machine_paths=MACHINE_PATHS) -> list[str]:
    problems, pages = [], {}
    html_files = sorted(p for p in root.rglob("*.html") if "_static" not in p.parts
                        and "_sources" not in p.parts and "_modules" not in p.parts)
    for f in html_files:
        pages[f.resolve()] = _parse(f)
    for f in html_files:
        page = pages[f.resolve()]
        text = f.read_text(errors="replace")
        rel = f.relative_to(root)
        for marker in ERROR_MARKERS[:3]:
            if marker in text:
                problems.append(f"{rel}: shows an error cell ({marker!r})")
                break
        problems += [f"{rel}: {p}" for p in path_problems(page, machine_paths)]
        for src in page.images:
            if src.startswith("data:"):
                if len(src) < 100:
                    problems.append(f"{rel}: empty inline image")
                continue
            if urlparse(src).scheme:
                continue
            target = (f.parent / unquote(src.split("#")[0].split("?")[0])).resolve()
            if not target.is_file() or target.stat().st_size == 0:
                problems.append(f"{rel}: missing image {src}")
        for href in page.links:
            url = urlparse(href)
            if url.scheme or href.startswith(("mailto:", "javascript:")):
                continue
            path, _, anchor = href.partition("#")
            target = (f.parent / unquote(path)).resolve() if path else f.resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{rel}: broken link {href}")
            elif anchor and target.suffix == ".html":
                tp = pages.get(target) or _parse(target)
                if unquote(anchor) not in tp.ids:
                    problems.append(f"{rel}: link {href} points to a missing anchor")
    return problems


def screenshot(page: Path, out: Path, chromium: str) -> str | None:
    """Render ``page`` in headless Chromium into ``out``; return a problem or None."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
               "--virtual-time-budget=5000", f"--screenshot={out}", "--window-size=1280,2200",
               page.resolve().as_uri()]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if res.returncode != 0 or not out.exists():
        return f"chromium could not render {page.name}: {res.stderr.strip()[-300:]}"
    from PIL import Image, ImageStat

    with Image.open(out) as im:
        spread = ImageStat.Stat(im.convert("L")).stddev[0]
    if spread < 2.0:
        return f"{page.name} renders blank (pixel std {spread:.2f})"
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default="_build/html")
    ap.add_argument("--screenshots", default="_build/screenshots")
    ap.add_argument("--pages", nargs="*", default=["index", "book/results", "book/methods/ddoq",
                                                   "notebooks/quantization"])
    ap.add_argument("--no-browser", action="store_true", help="static checks only")
    args = ap.parse_args(argv)
    root = Path(args.root)
    if not (root / "index.html").exists():
        print(f"check_book: {root}/index.html not found; build the book first (make book)")
        return 1
    problems = static_problems(root)
    if not args.no_browser:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            problems.append("chromium not found: install Debian's `chromium` package "
                            "(apt-get install chromium) or pass --no-browser")
        else:
            shots = Path(args.screenshots)
            shots.mkdir(parents=True, exist_ok=True)
            for name in args.pages:
                page = root / f"{name}.html"
                if not page.exists():
                    problems.append(f"page {name}.html is missing")
                    continue
                out = shots / f"{name.replace('/', '_')}.png"
                problem = screenshot(page, out, chromium)
                if problem:
                    problems.append(problem)
                else:
                    print(f"screenshot {out}")
    for p in problems:
        print(f"PROBLEM {p}")
    n = len(list(root.rglob("*.html")))
    print(f"check_book: {n} pages, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
