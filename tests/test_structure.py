"""Package structure: the internal import graph has no cycle, ipt_utils modules are imported at
the top of modules (heavy third-party packages may stay lazy), and every repo file a comment,
docstring, profile, README, Makefile or doc names exists in the repo."""
import ast
import io
import re
import tokenize
from pathlib import Path

from ipt_utils.schema import REPO_ROOT

PACKAGE = REPO_ROOT / "ipt_utils"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def internal_targets(module: str, node: ast.AST) -> list[str]:
    """The ipt_utils modules an import statement loads (`from . import x` names module x)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        pkg = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(pkg[:len(pkg) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    out = []
    for a in node.names:
        if f"{base}.{a.name}" in MODULES:
            out.append(f"{base}.{a.name}")
        elif base in MODULES:
            out.append(base)
    return out


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """-> (module -> internal modules it imports anywhere, ["file:line: module"] of imports in a body)."""
    graph, local = {}, []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[name] = set()
        scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        nested = {id(x) for s in scopes for x in ast.walk(s) if x is not s}
        for node in ast.walk(tree):
            targets = [t for t in internal_targets(name, node) if t != name]
            graph[name] |= set(targets)
            if targets and id(node) in nested:
                local.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {', '.join(targets)}")
    return graph, local


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == "open":
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        state[n] = "done"
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_graph_helpers_see_imports_and_cycles():
    """The checker itself: relative imports resolve, and a planted cycle is found."""
    assert internal_targets("ipt_utils.stage", ast.parse("from . import io").body[0]) == ["ipt_utils.io"]
    assert internal_targets("ipt_utils.stage", ast.parse("from .registry import STAGES").body[0]) \
        == ["ipt_utils.registry"]
    assert internal_targets("ipt_utils.tasks.ipt_metrics", ast.parse("from .. import io").body[0]) == ["ipt_utils.io"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle():
    graph, _ = import_graph()
    assert "ipt_utils.registry" in graph["ipt_utils.stage"]  # the graph is the real one
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_package_modules_are_imported_at_the_top():
    """An ipt_utils module imported inside a function or class hides a cycle or a slow import;
    heavy third-party packages (torch, transformers, vllm, ...) may be imported lazily."""
    _, local = import_graph()
    assert not local, "function-local imports of ipt_utils modules:\n" + "\n".join(local)


# ---------------------------------------------------------------- file references

PATH_REF = re.compile(r"(?<![\w./-])((?:docs|scripts|params|bench|dev|notebooks|ipt_utils|tests|results/bench)"
                      r"/[\w.+/-]*\w)")


def _text_sources():
    """(file, line, text) of every comment and string literal in ipt_utils/ and of every line of
    the profiles, task YAMLs, README, Makefile and docs/."""
    for path in sorted(PACKAGE.rglob("*.py")):
        src = path.read_text(encoding="utf-8")
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type in (tokenize.COMMENT, tokenize.STRING):
                yield path, tok.start[0], tok.string
    for pattern in ("params/**/*.yaml", "ipt_utils/**/*.yaml", "README.md", "Makefile", "docs/**/*.md"):
        for path in sorted(REPO_ROOT.glob(pattern)):
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                yield path, i, line


def path_refs(text: str) -> list[str]:
    """Repo-relative paths named in `text`: a file (its last part has an extension) or a folder
    (written with a trailing '/'). Placeholders (`params/<name>.yaml`) and prose such as
    "params/inputs" are not paths."""
    out = []
    for m in PATH_REF.finditer(text):
        ref, after = m.group(1), text[m.end():m.end() + 1]
        if after in "<{*":
            continue
        if "." in ref.rsplit("/", 1)[-1] or after == "/":
            out.append(ref)
    return out


def test_path_refs_parsing():
    assert path_refs("see docs/PAPER.md and params/accelerate/ (or params/<name>.yaml)") \
        == ["docs/PAPER.md", "params/accelerate"]
    assert path_refs("other params/inputs; results/runs/x.json; bench/bench_x.py.") == ["bench/bench_x.py"]


def test_every_named_repo_file_exists():
    refs = [(path, line, ref) for path, line, text in _text_sources() for ref in path_refs(text)]
    assert len(refs) > 50  # the scan reads the real sources
    missing = [f"{p.relative_to(REPO_ROOT)}:{line}: {ref}" for p, line, ref in refs if not (REPO_ROOT / ref).exists()]
    assert not missing, "files named but not in the repo:\n" + "\n".join(missing)
