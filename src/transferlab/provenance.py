"""Which source a stage's outputs depend on, so caches and dvc.yaml can follow the code.

A cached artefact is only valid for the code that made it. Listing that code by hand rots as
imports change, so the set of files is derived from the imports themselves: `import_closure`
follows every `transferlab.*` import, transitively, by parsing source with `ast` (importing the
modules would pull torch and take seconds). `code_version` digests that source, normalised so
that editing a comment or docstring does not throw caches away, together with the versions of
the libraries that shape outputs.

`python -m transferlab.provenance MODULE...` prints the closure's files for dvc.yaml's deps.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import sys
import threading
from pathlib import Path

PACKAGE = "transferlab"
PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parents[1]  # src/transferlab -> the repository
OUTPUT_LIBRARIES = ("torch", "transformers", "tokenizers")  # their versions change numbers we produce
DIGEST_CHARS = 16


def module_file(module: str, root: Path | None = None) -> Path:
    """The .py file of `module` (a package's `__init__.py`) under the package directory `root`.

    `root` defaults to this copy's package directory, so a copy of the source tree reports its
    own files; tests point it at a throwaway package tree.
    """
    path = _find_file(module, root or PACKAGE_DIR)
    if path is None:
        raise ModuleNotFoundError(f"{module!r}: no such module in {root or PACKAGE_DIR}")
    return path


def _find_file(module: str, root: Path) -> Path | None:
    """The file of `module`, or None when it is not a `transferlab` module that exists under root."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if len(parts) == 1 and candidate.name != "__init__.py":
            continue  # the package itself is only ever its __init__.py
        if candidate.is_file():
            return candidate
    return None


def _with_parents(module: str) -> list[str]:
    """`a.b.c` -> [`a`, `a.b`, `a.b.c`]: importing a module first executes every package above it."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


_parsing = threading.RLock()  # reentrant: a finalizer run mid-parse may parse on the same thread
MISMATCH = "AST constructor recursion depth mismatch"
PARSE_ATTEMPTS = 3


def parse(path: Path) -> ast.Module:
    """`path`'s syntax tree. CPython 3.11 keeps one AST-constructor recursion counter for all
    threads (python/cpython#106905): when another thread parses in the middle of ours (a garbage
    collection's finalizer lets it run; Python 3.11's traceback formatting parses source too), ours
    fails with a spurious SystemError. Our own parses take turns; one hit by anyone else's is redone."""
    text = path.read_text(encoding="utf-8")
    attempts = PARSE_ATTEMPTS
    while True:
        with _parsing:
            try:
                return ast.parse(text, filename=str(path))
            except SystemError as exc:
                attempts -= 1
                if MISMATCH not in str(exc) or attempts == 0:
                    raise


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve_relative(node: ast.ImportFrom, module: str, path: Path) -> str:
    """The absolute name a `from .x import y` refers to (PEP 328), from the importing module."""
    package = module if _is_package(path) else module.rpartition(".")[0]
    parts = package.split(".")
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imported_names(module: str, path: Path, root: Path) -> set[str]:
    """Every `transferlab` module that running `path` may import, at top level or inside functions.

    `ast.walk` visits function bodies too: a lazy import runs when the function does, so its
    code shapes outputs as much as a top-level one. `from pkg import y` counts `pkg.y` only when
    `y` is a submodule; a name defined in `pkg/__init__.py` is covered by counting `pkg`.
    """
    names: set[str] = set()
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(node, module, path) if node.level else node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names
                         if _find_file(f"{base}.{alias.name}", root) is not None)
    return {parent for name in names for parent in _with_parents(name)
            if _find_file(parent, root) is not None}


def import_closure(module: str, root: Path | None = None) -> list[str]:
    """`module` and every `transferlab` module it imports, transitively, with their packages; sorted.

    Source is parsed, never imported. Dynamic imports (`importlib.import_module(f"...")`,
    `__import__(name)`) cannot be seen and are not followed.
    """
    root = root or PACKAGE_DIR
    module_file(module, root)  # an unknown module is an error, not an empty closure
    seen: set[str] = set()
    todo = _with_parents(module)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_imported_names(name, module_file(name, root), root) - seen)
    return sorted(seen)


def closure_files(module: str, root: Path | None = None) -> list[Path]:
    """The .py files of `module`'s import closure, in the closure's (sorted) order."""
    return [module_file(name, root) for name in import_closure(module, root)]


def normalized_source(path: Path) -> str:
    """The code of `path` without comments and docstrings: what a cache should be keyed on.

    `ast.unparse` drops comments and fixes layout; docstrings are dropped here. A body left
    empty gets `pass`, so the result stays valid Python.
    """
    tree = parse(path)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            if ast.get_docstring(node, clean=False) is not None:
                node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries whose behaviour is part of our outputs; read from
    package metadata so torch is not imported. A missing library is "absent"."""
    versions = {}
    for name in OUTPUT_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@functools.lru_cache(maxsize=None)
def code_version(module: str) -> str:
    """A short digest of the code that `module` runs plus the output-shaping library versions.

    It changes when a statement in the closure changes and not for comments or docstrings.
    Cached per process: the source does not change within a run.
    """
    digest = hashlib.sha256()
    for name in import_closure(module):
        digest.update(f"{name}\0{normalized_source(module_file(name))}\0".encode())
    for name, version in library_versions().items():
        digest.update(f"{name}=={version}\0".encode())
    return digest.hexdigest()[:DIGEST_CHARS]


def main(argv: list[str]) -> int:
    """Print the closure files of each module, relative to the repository, for dvc.yaml's deps."""
    if not argv:
        print("usage: python -m transferlab.provenance MODULE...", file=sys.stderr)
        return 2
    try:
        files = {path for module in argv for path in closure_files(module)}
    except ModuleNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 1
    for path in sorted(files):
        print(path.relative_to(REPO_ROOT).as_posix())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
