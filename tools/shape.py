"""Code shape of a package: code lines per module (docstrings, comments and blank lines
excluded), total, and functions over 60 code lines.  python tools/shape.py pqlib"""
import ast, io, sys, tokenize, pathlib
def code_lines(src):
    tree = ast.parse(src)
    doc = set()
    for node in ast.walk(tree):
        if isinstance(node,(ast.Module,ast.FunctionDef,ast.AsyncFunctionDef,ast.ClassDef)) and node.body:
            b=node.body[0]
            if isinstance(b,ast.Expr) and isinstance(getattr(b,'value',None),ast.Constant) and isinstance(b.value.value,str):
                doc.update(range(b.lineno,b.end_lineno+1))
    lines=set()
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type in (tokenize.COMMENT,tokenize.NL,tokenize.NEWLINE,tokenize.INDENT,tokenize.DEDENT,tokenize.ENDMARKER): continue
        for l in range(tok.start[0], tok.end[0]+1):
            if l not in doc: lines.add(l)
    return lines, tree
tot=0; long=[]
for p in sorted(pathlib.Path(sys.argv[1]).rglob('*.py')):
    src=p.read_text(); lines,tree=code_lines(src); tot+=len(lines)
    print(f"{len(lines):5d} {len(src.splitlines()):5d} {p}")
    for node in ast.walk(tree):
        if isinstance(node,(ast.FunctionDef,ast.AsyncFunctionDef)):
            n=len([l for l in lines if node.lineno<=l<=node.end_lineno])
            if n>60: long.append((n,f"{p}:{node.name}"))
print("total code lines",tot)
for n,f in sorted(long,reverse=True): print(n,f)
