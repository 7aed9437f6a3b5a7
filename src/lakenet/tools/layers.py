"""The layer check: `python -m lakenet.tools.layers [ROOT]` reads every module under ROOT (default: the
installed `lakenet` package) as source text, never importing it, and prints the package-level import graph.
It exits with status 1 when

(a) an import points up (or sideways) the layer order in `LAYERS`,
(b) packages import each other in a cycle, or
(c) a module imports a private name (`_foo`: a module or an attribute) that belongs to another unit.

What counts as an import: every `import` and `from ... import` statement anywhere in a module (at the top, inside
functions, under `try:`), relative ones resolved, and `importlib.import_module("lakenet....")` with a literal
name. A lazy import inside a function is still a dependency: it only moves the moment the price is paid.

Imports under `if TYPE_CHECKING:` are reported separately (marked "type-only") and they count like any other:
an annotation that names an upper layer's class still ties the lower layer's interface to it (mypy follows it,
and an `isinstance` or a default value turns it into a runtime import with no one noticing). A lower layer that
needs such a type declares a protocol of its own, or the type moves down.

Units: the first name under the package (`lakenet.data.codecs.text` belongs to `data`; `errors.py` is `errors`),
except the sub-units named in `LAYERS` (`serving.app` is not `serving`), and `__init__` for the package's own
`__init__.py`. Importing `lakenet.x` also runs `lakenet/__init__.py`; that implicit parent import is not an edge
(which is why the package's `__init__` imports nothing eagerly).

Private names: `lakenet.a.b._c` is private to the package `lakenet.a.b` (so `lakenet._version` is everyone's,
`lakenet.tracking._mlflow_model_code` is tracking's); `from lakenet.x.y import _z` may be written only inside the
unit of `lakenet.x.y`. Dunder names (`__version__`) are not private.

`PENDING` lists violations that are known and owned by someone else's change, each with the fix agreed: they are
printed but do not fail the check (`--strict` fails on them too). An entry that no longer occurs is reported as
stale, so the list only shrinks.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "LAYERS",
    "PENDING",
    "Import",
    "Report",
    "Violation",
    "check",
    "collect_imports",
    "main",
]

# The layer order, top to bottom: a unit may import only units of the layers below its own. Units that share a
# layer are independent peers: they may not import each other either (nothing in `SIDEWAYS` so far).
LAYERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("tools",), "developer tools: read the source as text and import no lakenet module; nothing imports them"),
    (("__main__",), "`python -m lakenet`: runs the command line, nothing else"),
    (("cli",), "the command line: parses arguments, calls the façade, prints; no logic"),
    (("demo", "examples"), "walkthroughs the CLI runs: they drive the façade as a user would"),
    (("jobs",), "scheduled and data-triggered runs of the façade's commands, in child processes, with history"),
    (("__init__",), "`import lakenet`: the public surface, the façade's functions and result types, loaded lazily"),
    (("api", "spark"), "the façades: lakenet.api for every workflow, lakenet.spark for notebooks on a cluster"),
    (("workflows", "starter"), "what the façade's functions do, one module per workflow (starter: `init`'s config)"),
    (("tuning",), "a study's trials are training runs, tracked as MLflow child runs: above training and tracking"),
    (("engines",), "where batch work runs (local processes, Spark tasks): they run the loop and the predictor"),
    (("serving.server",), "the server process: uvicorn, threads, signals, connection limits around the app"),
    (("serving.app",), "the HTTP app: routes, auth, deadlines, the micro-batcher in front of the predictor"),
    (("serving",), "the server's parts: settings, request schema, batcher, metrics; no engine, no FastAPI app"),
    (("monitoring",), "drift of new rows against the rows a model learned from: reads tables, runs the predictor"),
    (("tracking",), "MLflow runs, registry and the pyfunc wrapper (the only mlflow importer): logs what training made"),
    (("training",), "the per-worker loop: plain PyTorch that runs the same in a process, a Spark task or DDP"),
    (("reports",), "HTML from results already computed: needs only how metrics are read"),
    (("evaluation",), "metrics (numpy, mergeable across workers) and scoring a split with the predictor"),
    (("inference",), "the predictor and featurizer: load a bundle once, arrow batch in, arrow batch out"),
    (("models",), "architectures, their registry, pretrained and ONNX networks, the bundle that holds them"),
    (("data",), "tables, sources, splits, the feature codecs and preprocessor that turn rows into arrays"),
    (("config",), "the pydantic schema, YAML loading and migrations: everything above reads a validated config"),
    (("errors", "_version", "host"), "leaves every layer may use: the error types, the version, this host's cores"),
)

# Same-layer imports allowed, as (importer unit, imported unit): none; a new one needs a reason here.
SIDEWAYS: frozenset[tuple[str, str]] = frozenset()

# Known violations whose fix is in a file owned by another change: (importer module, what it imports: a module,
# or module.name for a private name) -> the fix. `python -m lakenet.tools.layers` fails once one is stale.
PENDING: dict[tuple[str, str], str] = {}

ROOT_UNIT = "__init__"


@dataclass(frozen=True)
class Import:
    """One import statement's dependency: `importer` (a module) needs `target` (a module) at `path:line`."""

    importer: str
    target: str
    path: str
    line: int
    type_only: bool = False
    names: tuple[str, ...] = ()  # the names taken from `target` (from ... import a, b)


@dataclass(frozen=True)
class Violation:
    kind: str  # "upward", "sideways", "cycle", "private", "unplaced"
    message: str
    where: tuple[Import, ...] = ()
    paths: tuple[list[str], ...] = ()  # a cycle's closed paths of units
    subject: str = ""  # what is imported: a module, or module.name for a private name

    @property
    def key(self) -> tuple[str, str] | None:
        """The `PENDING` key of a one-import violation."""
        return (self.where[0].importer, self.subject or self.where[0].target) if len(self.where) == 1 else None


@dataclass
class Report:
    package: str
    imports: list[Import]
    units: dict[str, str]  # module -> unit
    violations: list[Violation] = field(default_factory=list)
    pending: list[Violation] = field(default_factory=list)
    stale: list[tuple[str, str]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.violations)


# ---- reading the source ---------------------------------------------------------------------------------------
def find_modules(root: Path) -> dict[str, Path]:
    """Every module under the package directory `root`, by dotted name (`lakenet.data.codecs.text`)."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        parts = [root.name, *rel.parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, type_only: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    """Every node below `node`, with whether it sits under `if TYPE_CHECKING:` (its `else:` branch does not)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            yield child.test, type_only
            for stmt in child.body:
                yield stmt, True
                yield from _walk(stmt, True)
            for stmt in child.orelse:
                yield stmt, type_only
                yield from _walk(stmt, type_only)
            continue
        yield child, type_only
        yield from _walk(child, type_only)


def _resolve(target: str, modules: dict[str, Path]) -> str:
    """The longest prefix of `target` that is a module of the tree (`pkg.a.b.C` -> `pkg.a.b`)."""
    parts = target.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts) if parts else target


def _from_base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join([*base, node.module] if node.module else base)


def _imports_of(node: ast.AST, module: str, path: Path, modules: dict[str, Path], type_only: bool) -> Iterator[Import]:
    package = module.split(".")[0]
    is_package = path.name == "__init__.py"
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == package:
                yield Import(module, _resolve(alias.name, modules), str(path), node.lineno, type_only)
    elif isinstance(node, ast.ImportFrom):
        base = _from_base(node, module, is_package)
        if base.split(".")[0] != package:
            return
        plain: list[str] = []
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if sub in modules:  # `from pkg.a import b` where b is a module
                yield Import(module, sub, str(path), node.lineno, type_only)
            else:
                plain.append(alias.name)
        if plain:
            yield Import(module, _resolve(base, modules), str(path), node.lineno, type_only, tuple(plain))
    elif isinstance(node, ast.Call) and _is_import_module(node):
        arg = node.args[0]
        assert isinstance(arg, ast.Constant) and isinstance(arg.value, str)
        if arg.value.split(".")[0] == package:
            yield Import(module, _resolve(arg.value, modules), str(path), node.lineno, type_only)


def _is_import_module(node: ast.Call) -> bool:
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    return (
        name == "import_module"
        and len(node.args) >= 1
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


def collect_imports(root: Path) -> tuple[list[Import], dict[str, Path]]:
    """Every import of a module of the package at `root` made by a module of it, and the modules."""
    modules = find_modules(root)
    found: list[Import] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, type_only in _walk(tree):
            found.extend(_imports_of(node, module, path, modules, type_only))
    return found, modules


# ---- units and layers -----------------------------------------------------------------------------------------
def layer_index(layers: Sequence[tuple[tuple[str, ...], str]] = LAYERS) -> dict[str, int]:
    return {unit: i for i, (units, _) in enumerate(layers) for unit in units}


def unit_of(module: str, declared: Iterable[str]) -> str:
    """The unit of `module`: the longest declared unit that prefixes it, else its first name under the package."""
    rel = module.split(".")[1:]
    if not rel:
        return ROOT_UNIT
    for n in range(len(rel), 1, -1):
        if ".".join(rel[:n]) in declared:
            return ".".join(rel[:n])
    return rel[0]


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_violations(imp: Import, units: dict[str, str]) -> Iterator[Violation]:
    parts = imp.target.split(".")
    for i, part in enumerate(parts[1:], start=1):
        scope = ".".join(parts[:i])  # the package the private module belongs to
        if _is_private(part) and not (imp.importer == scope or imp.importer.startswith(scope + ".")):
            private = ".".join(parts[: i + 1])
            yield Violation("private", f"{imp.importer} imports {private}, private to {scope}", (imp,), subject=private)
            return
    owner = units[imp.target]
    for name in imp.names:
        if _is_private(name) and units[imp.importer] != owner:
            yield Violation(
                "private",
                f"{imp.importer} imports {name} from {imp.target}, private to the unit {owner}",
                (imp,),
                subject=f"{imp.target}.{name}",
            )


def _direction_violations(imp: Import, units: dict[str, str], index: dict[str, int]) -> Iterator[Violation]:
    src, dst = units[imp.importer], units[imp.target]
    if src == dst or src not in index or dst not in index:
        return
    tag = " (type-only)" if imp.type_only else ""
    if index[dst] < index[src]:
        yield Violation("upward", f"{imp.importer} imports {imp.target}{tag}: {src} is below {dst}", (imp,))
    elif index[dst] == index[src] and (src, dst) not in SIDEWAYS:
        yield Violation("sideways", f"{imp.importer} imports {imp.target}{tag}: {src} and {dst} are peers", (imp,))


def unit_graph(imports: Iterable[Import], units: dict[str, str]) -> dict[tuple[str, str], list[Import]]:
    graph: dict[tuple[str, str], list[Import]] = defaultdict(list)
    for imp in imports:
        src, dst = units[imp.importer], units[imp.target]
        if src != dst:
            graph[src, dst].append(imp)
    return dict(graph)


def cycles(edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one unit (Tarjan), each sorted, in sorted order."""
    succ: dict[str, list[str]] = defaultdict(list)
    for a, b in edges:
        succ[a].append(b)
        succ.setdefault(b, [])
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        order[v] = low[v] = len(order)
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            comp: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(succ):
        if v not in order:
            visit(v)
    return sorted(found)


def _path(start: str, goal: str, comp: Sequence[str], graph: dict[tuple[str, str], list[Import]]) -> list[str]:
    """A shortest path of imports from `start` to `goal` inside the cycle `comp` (breadth first), ends included."""
    prev = {start: start}
    frontier = [start]
    while goal not in prev:
        nxt = []
        for a in frontier:
            for b in sorted(comp):
                if (a, b) in graph and b not in prev:
                    prev[b] = a
                    nxt.append(b)
        if not nxt:
            raise AssertionError(f"no path {start} -> {goal} in {comp}")
        frontier = nxt
    path = [goal]
    while path[0] != start:
        path.insert(0, prev[path[0]])
    return path


def cycle_paths(
    comp: Sequence[str], graph: dict[tuple[str, str], list[Import]], index: dict[str, int]
) -> list[list[str]]:
    """Closed paths [a, b, ..., a] through the cycle `comp`: one per edge a -> b of it that does not point down
    (the edges to remove); one through its first unit when its units are in no layer."""
    placed = [u for u in comp if u in index]
    closing = [(a, b) for a, b in sorted(graph) if a in placed and b in placed and index[b] <= index[a]]
    closing = closing or [(comp[0], b) for b in sorted(comp) if (comp[0], b) in graph][:1]
    return [[a, *_path(b, a, comp, graph)] for a, b in closing]


PACKAGE_DIR = Path(__file__).resolve().parents[1]


def check(
    root: Path = PACKAGE_DIR,
    layers: Sequence[tuple[tuple[str, ...], str]] = LAYERS,
    *,
    pending: dict[tuple[str, str], str] | None = None,
) -> Report:
    """The import graph of the package at `root` and its violations. `pending`: the violations that do not fail
    the check (default: `PENDING` for lakenet itself, none for another tree)."""
    imports, modules = collect_imports(root)
    index = layer_index(layers)
    units = {m: unit_of(m, index) for m in modules}
    report = Report(root.name, imports, units)
    waived = pending if pending is not None else PENDING if root.resolve() == PACKAGE_DIR else {}
    for unit in sorted(set(units.values()) - set(index)):
        report.violations.append(
            Violation("unplaced", f"unit {unit} is in no layer: declare it in LAYERS, with its reason")
        )
    seen: set[tuple[str, str]] = set()
    for imp in imports:
        for v in (*_direction_violations(imp, units, index), *_private_violations(imp, units)):
            if v.key in waived:
                seen.add(v.key)
                report.pending.append(v)
            else:
                report.violations.append(v)
    graph = unit_graph(imports, units)
    # A cycle that only a pending edge closes is pending with it: the agreed fix removes that edge.
    kept = unit_graph((i for i in imports if (i.importer, i.target) not in waived), units)
    real = cycles(kept)
    for comp in cycles(graph):
        paths = cycle_paths(comp, graph, index)
        inside = tuple(i for p in paths for a, b in itertools.pairwise(p) for i in graph[a, b])
        v = Violation("cycle", "import cycle between " + ", ".join(comp), tuple(dict.fromkeys(inside)), tuple(paths))
        (report.violations if comp in real else report.pending).append(v)
    report.stale = sorted(set(waived) - seen)
    return report


# ---- printing -------------------------------------------------------------------------------------------------
def _where(imp: Import, root: Path) -> str:
    path = Path(imp.path)
    try:
        shown = path.relative_to(root.parent)
    except ValueError:
        shown = path
    return f"{shown}:{imp.line}"


def format_graph(report: Report, layers: Sequence[tuple[tuple[str, ...], str]] = LAYERS) -> str:
    """One line per unit, top layer first: the units it imports, in layer order, with the number of import
    statements (`t`: how many of them are type-only); `^` marks an edge that points up or sideways."""
    index = layer_index(layers)
    graph = unit_graph(report.imports, report.units)
    rank = {u: (index.get(u, -1), u) for u in set(report.units.values())}
    width = max(len(u) for u in rank)
    lines = [f"{report.package}: import graph of {len(report.units)} modules, units top to bottom"]
    for src in sorted(rank, key=lambda u: rank[u]):
        outs = sorted((dst for s, dst in graph if s == src), key=lambda u: rank[u])
        parts = []
        for dst in outs:
            imps = graph[src, dst]
            t = sum(i.type_only for i in imps)
            up = "^" if src in index and dst in index and index[dst] <= index[src] else ""
            parts.append(f"{up}{dst} {len(imps)}" + (f" ({t}t)" if t else ""))
        lines.append(f"  {src:<{width}} -> " + (", ".join(parts) if parts else "-"))
    return "\n".join(lines)


def _cycle_edges(v: Violation, report: Report, root: Path) -> Iterator[str]:
    """Each closed path of a cycle, then each of its edges with the import count and the first imports."""
    graph = unit_graph(v.where, report.units)
    for path in v.paths:
        yield "      " + " -> ".join(path)
    for (a, b), imps in graph.items():
        shown = ", ".join(_where(i, root) for i in imps[:3]) + (", ..." if len(imps) > 3 else "")
        yield f"        {a} -> {b} ({len(imps)}): {shown}"


def format_violations(report: Report, root: Path) -> str:
    lines: list[str] = []
    for title, group in (("violations", report.violations), ("pending (declared in PENDING)", report.pending)):
        if not group:
            continue
        lines.append(f"{len(group)} {title}:")
        for v in group:
            lines.append(f"  [{v.kind}] {v.message}")
            if v.kind == "cycle":
                lines.extend(_cycle_edges(v, report, root))
                continue
            for imp in v.where:
                tag = " (type-only)" if imp.type_only else ""
                lines.append(f"      {_where(imp, root)}: {imp.importer} -> {imp.target}{tag}")
            if v in report.pending and v.key in PENDING:
                lines.append(f"      fix: {PENDING[v.key]}")
    for key in report.stale:
        lines.append(f"stale PENDING entry (no longer occurs; remove it): {key[0]} -> {key[1]}")
    if not report.violations and not report.pending:
        lines.append("no violations")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lakenet.tools.layers", description=__doc__.split("\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=PACKAGE_DIR,
                        help="the package directory to check (default: the lakenet package itself)")  # fmt: skip
    parser.add_argument("--strict", action="store_true", help="PENDING violations fail too")
    parser.add_argument("--quiet", action="store_true", help="print the violations only, not the graph")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if not (root / "__init__.py").is_file():
        parser.error(f"{root} is not a package directory (no __init__.py)")
    report = check(root, pending={} if args.strict else None)
    if not args.quiet:
        print(format_graph(report))
        print()
    print(format_violations(report, root))
    return 1 if report.failed or report.stale else 0


if __name__ == "__main__":
    sys.exit(main())
