"""The layout rules, read from the sources: each backend has one home, the
math has one home."""

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ptycho_layers"
BACKEND_PACKAGES = ("tensorflow", "jax", "torch")
# The benchmark times the layer against each backend's own peers (copies,
# TensorFlow's crop_and_resize), so it may name them too.
ALLOWED = ("backends", "benchmark")
MAX_LINES = 300


def sources():
    return sorted(PACKAGE.rglob("*.py"))


def backend_uses(path):
    """Lines of `path` that import a backend or ask Keras which one runs."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        if any(name.split(".")[0] in BACKEND_PACKAGES for name in names):
            found.append(node.lineno)
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "backend"
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "backend"
        ):
            found.append(node.lineno)  # keras.backend.backend
    return found


def test_no_backend_code_outside_backends():
    offenders = {}
    for path in sources():
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ALLOWED:
            continue
        lines = backend_uses(path)
        if lines:
            offenders[str(relative)] = lines
    assert offenders == {}


def test_the_check_sees_backend_code():
    """The rule above has teeth: it finds the backends' own imports."""
    assert backend_uses(PACKAGE / "backends" / "tensorflow.py")
    assert backend_uses(PACKAGE / "backends" / "__init__.py")


def test_no_module_over_300_lines():
    long = {
        str(path.relative_to(PACKAGE)): count
        for path in sources()
        if (count := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


@pytest.mark.parametrize("name", BACKEND_PACKAGES)
def test_every_backend_offers_the_same_contract(name):
    """Each backend module exports the same names as TensorFlow's (loaded
    only where that backend is installed)."""
    pytest.importorskip(name)
    reference = importlib.import_module("ptycho_layers.backends.tensorflow")
    module = importlib.import_module(f"ptycho_layers.backends.{name}")
    assert sorted(module.__all__) == sorted(reference.__all__)
    for attribute in module.__all__:
        assert hasattr(module, attribute), attribute
