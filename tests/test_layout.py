"""The house rules that the code's shape must keep (ARCHITECTURE.md): no import cycle,
``broker/base.py`` imports no broker, the AWS SDK only in the SQS broker, printing
and click only in ``cli/``, and every module says in its docstring what it owns."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / "src"
PACKAGE = SRC / "qdone"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import that runs: at module level or in functions, not under TYPE_CHECKING."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        else:
            yield from _import_nodes(node)


def imports(module: str) -> set[str]:
    """The qdone modules that ``module`` imports (a ``from package import name``
    counts as the submodule when ``name`` is one, else as the package)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in MODULES)
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join([*base, *([node.module] if node.module else [])])
        else:
            target = node.module or ""
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            if sub in MODULES:
                found.add(sub)
            elif target in MODULES:
                found.add(target)
    found.discard(module)
    return found


def test_the_import_graph_has_no_cycle() -> None:
    graph = {module: imports(module) for module in MODULES}
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done

    def walk(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                walk(target, [*path, target])
        state[module] = 2

    for module in MODULES:
        if module not in state:
            walk(module, [module])


def test_the_broker_contract_imports_no_broker() -> None:
    brokers = [m for m in imports("qdone.broker.base") if m.startswith("qdone.broker")]
    assert brokers == []


def test_the_aws_sdk_only_in_the_sqs_broker() -> None:
    allowed = {"qdone.broker.sqs_client"}
    for module, path in MODULES.items():
        for node in _import_nodes(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            if any((n or "").split(".")[0] in ("boto3", "botocore") for n in names):
                assert module in allowed, module


def test_only_the_cli_prints_or_uses_click() -> None:
    for module, path in MODULES.items():
        if module == "qdone.cli" or module.startswith("qdone.cli."):
            continue
        tree = ast.parse(path.read_text())
        calls = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "print"
        ]
        assert calls == [], f"{module} prints"
        for node in _import_nodes(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            assert not any((n or "").split(".")[0] == "click" for n in names), module


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_says_what_it_owns(module: str) -> None:
    docstring = ast.get_docstring(ast.parse(MODULES[module].read_text()))
    assert docstring and docstring.splitlines()[0].strip(), f"{module} has no docstring"
