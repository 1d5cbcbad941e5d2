"""The code shape of a package: code lines per module, the total, and long functions.

    python tools/shape.py pqlib [--max-function 60]

A code line holds a token that is not a comment or part of a docstring; blank lines are not
counted. Used by ``tests/test_shape.py`` and quoted in the library-shape issue note.
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from pathlib import Path

SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
        tokenize.ENDMARKER}


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        kinds = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        if isinstance(node, kinds) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def code_lines(source: str) -> set[int]:
    """Numbers of the lines of ``source`` that hold code."""
    doc = _docstring_lines(ast.parse(source))
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in SKIP:
            lines.update(n for n in range(tok.start[0], tok.end[0] + 1) if n not in doc)
    return lines


def shape(package: str | Path) -> dict:
    """{'modules': {path: (code lines, all lines)}, 'functions': {name: code lines}, 'total'}."""
    modules, functions = {}, {}
    for path in sorted(Path(package).rglob("*.py")):
        source = path.read_text()
        lines = code_lines(source)
        modules[str(path)] = (len(lines), len(source.splitlines()))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                span = range(node.lineno, node.end_lineno + 1)
                functions[f"{path}:{node.lineno}:{node.name}"] = sum(n in lines for n in span)
    return {"modules": modules, "functions": functions,
            "total": sum(code for code, _ in modules.values())}


if __name__ == "__main__":
    s = shape(sys.argv[1] if len(sys.argv) > 1 else "pqlib")
    limit = int(sys.argv[sys.argv.index("--max-function") + 1]) if "--max-function" in sys.argv else 60
    print(f"{'code':>5} {'lines':>5}  module")
    for path, (code, total) in s["modules"].items():
        print(f"{code:5d} {total:5d}  {path}")
    print(f"total code lines: {s['total']}")
    for name, n in sorted(s["functions"].items(), key=lambda kv: -kv[1]):
        if n > limit:
            print(f"function over {limit} code lines: {name} ({n})")
