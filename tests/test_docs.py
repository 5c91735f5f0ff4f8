"""Documentation is code: every docstring example in the package and every
Python block of README.md runs on the current backend and shows what it
says.

Docstring examples are doctests: their printed output must match, up to
`...` (ELLIPSIS) and runs of whitespace (NORMALIZE_WHITESPACE, so an
array may be wrapped differently). So they must be written to read the
same on every backend: `tuple(x.shape)` rather than a backend's shape
object, `keras.ops.convert_to_numpy(x)` rather than a backend tensor's
repr. README blocks are run as they are, one after another, each in a
fresh namespace; one that raises (a failed `assert` among them) fails.
"""

import doctest
import importlib
import importlib.util
import pkgutil
import re
from pathlib import Path

import pytest

import ptycho_layers

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = Path(ptycho_layers.__file__).resolve().parent
README = ROOT / "README.md"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


# ---------------------------------------------------------------------------
# Docstring examples.


def package_module_names():
    """The package and every module under it, subpackages included."""
    found = pkgutil.walk_packages(ptycho_layers.__path__, prefix="ptycho_layers.")
    return ["ptycho_layers"] + sorted(info.name for info in found)


def import_or_reason(name):
    """(module, None), or (None, why not) where the module needs an
    optional package that is not installed (e.g. `_jax_windows`
    without JAX)."""
    try:
        return importlib.import_module(name), None
    except ModuleNotFoundError as error:
        missing = (error.name or "").split(".")[0]
        if missing and importlib.util.find_spec(missing) is None:
            return None, f"{name} needs {missing}, which is not installed"
        raise


def collect_docstring_examples():
    """One pytest param per docstring that has examples, in every module
    of the package; one skipped param per module that cannot be imported
    here."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    params = []
    for name in package_module_names():
        module, reason = import_or_reason(name)
        if module is None:
            params.append(pytest.param(None, id=name, marks=pytest.mark.skip(reason=reason)))
            continue
        for test in sorted(finder.find(module), key=lambda t: t.name):
            if test.examples:
                params.append(pytest.param(test, id=test.name))
    return params


DOCSTRING_EXAMPLES = collect_docstring_examples()


@pytest.mark.parametrize("test", DOCSTRING_EXAMPLES)
def test_docstring_example(test):
    output = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    result = runner.run(test, out=output.append)
    assert result.attempted > 0
    assert result.failed == 0, "".join(output)


def test_every_module_is_walked():
    """The walk above misses no module of the package (pkgutil quietly
    skips a subpackage it cannot import)."""
    on_disk = set()
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        on_disk.add(".".join(parts))
    # A subpackage that needs a missing optional package (`ptycho_layers.torch`
    # without PyTorch) cannot be walked into; it is reported skipped above.
    unwalkable = {
        name for name in on_disk
        if any(name.startswith(top + ".") for top in on_disk if import_or_reason(top)[0] is None)
    }
    assert set(package_module_names()) == on_disk - unwalkable


@pytest.mark.parametrize("name", ptycho_layers.__all__)
def test_public_api_has_an_example(name):
    """Each public name's docstring shows it at work (and so is run above)."""
    tests = doctest.DocTestFinder(recurse=False).find(getattr(ptycho_layers, name), name)
    assert any(test.examples for test in tests), f"{name} has no docstring example"


# ---------------------------------------------------------------------------
# README.md.


def readme_python_blocks():
    """(first line number, source) of every ```python block, in order."""
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        first_line = text.count("\n", 0, match.start(1)) + 1
        blocks.append((first_line, match.group(1)))
    return blocks


README_BLOCKS = readme_python_blocks()


def test_readme_has_python_blocks():
    assert len(README_BLOCKS) >= 5  # the README's API examples, at least


@pytest.mark.parametrize(
    "first_line,source", README_BLOCKS, ids=[f"README.md:{line}" for line, _ in README_BLOCKS]
)
def test_readme_block(first_line, source):
    # Padded so that a traceback names the README's own line numbers.
    code = compile("\n" * (first_line - 1) + source, str(README), "exec")
    exec(code, {"__name__": "__readme__"})
