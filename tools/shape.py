"""The code shape of a package: code lines and statements per module, the totals, long functions.

    python tools/shape.py pqlib [--max-function 60]

A code line holds a token that is not a comment or part of a docstring; blank lines are not
counted. A statement is one logical line (a call spread over three lines is one statement), so
the statement count does not depend on line wrapping. Used by ``tests/test_shape.py`` and quoted
in the library-shape issue note.
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


def statements(source: str) -> int:
    """Number of logical lines of ``source`` outside docstrings."""
    doc = _docstring_lines(ast.parse(source))
    return sum(tok.type == tokenize.NEWLINE and tok.start[0] not in doc
               for tok in tokenize.generate_tokens(io.StringIO(source).readline))


def shape(package: str | Path) -> dict:
    """{'modules': {path: (code lines, all lines, statements)}, 'functions': {name: code lines},
    'total': code lines, 'statements'}."""
    modules, functions = {}, {}
    for path in sorted(Path(package).rglob("*.py")):
        source = path.read_text()
        lines = code_lines(source)
        modules[str(path)] = (len(lines), len(source.splitlines()), statements(source))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                span = range(node.lineno, node.end_lineno + 1)
                functions[f"{path}:{node.lineno}:{node.name}"] = sum(n in lines for n in span)
    return {"modules": modules, "functions": functions,
            "total": sum(m[0] for m in modules.values()),
            "statements": sum(m[2] for m in modules.values())}


if __name__ == "__main__":
    s = shape(sys.argv[1] if len(sys.argv) > 1 else "pqlib")
    limit = int(sys.argv[sys.argv.index("--max-function") + 1]) if "--max-function" in sys.argv else 60
    print(f"{'stmts':>5} {'code':>5} {'lines':>5}  module")
    for path, (code, total, stmts) in s["modules"].items():
        print(f"{stmts:5d} {code:5d} {total:5d}  {path}")
    print(f"total statements: {s['statements']}, code lines: {s['total']}")
    for name, n in sorted(s["functions"].items(), key=lambda kv: -kv[1]):
        if n > limit:
            print(f"function over {limit} code lines: {name} ({n})")
