"""The layout rules, read from the sources: each backend has one home, each
implementation one package, each kernel's math one module, and the
benchmark lives outside the package."""

import ast
import importlib
import tomllib
from pathlib import Path

import pytest

from ptycho_layers import operators

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ptycho_layers"
BACKEND_PACKAGES = ("tensorflow", "jax", "torch")
# Where a backend may be imported: the backends' primitives, and the
# PyTorch implementation. The XLA implementation is `keras.ops` code.
ALLOWED = ("backends", "torch")
IMPLEMENTATIONS = ("xla", "torch")
MAX_LINES = 600
# PtychoPINN's per-patch algorithm, kept as the reference: it translates
# the whole object with weights of its own, by design not a kernel.
REFERENCE = Path("legacy.py")
# The host's `keras.ops` (`backends.on_host`): its `fft2` and `ifft2` are
# the primitives the Fourier kernel calls, as Keras's backends define
# theirs, not a kernel's math.
HOST_OPS = Path("backends/numpy_ops.py")


def sources():
    return sorted(PACKAGE.rglob("*.py"))


def relative(path):
    return path.relative_to(PACKAGE)


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


def interpolation_math(path):
    """Lines of `path` that compute interpolation weights or blend with
    them: `1 - w` (a neighbour's weight from its partner's), `lerp`,
    `addcmul` and Fourier shifts (`fft*`)."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Sub)
            and isinstance(node.left, ast.Constant)
            and node.left.value == 1
        ):
            found.append(node.lineno)
        if isinstance(node, ast.Attribute) and (
            node.attr in ("lerp", "addcmul", "addcmul_") or node.attr.startswith("fft")
        ):
            found.append(node.lineno)
    return found


def kernel_modules():
    """Every kernel module of every implementation, as paths."""
    paths = []
    for name in IMPLEMENTATIONS:
        if name == "torch":
            pytest.importorskip("torch")
        package = importlib.import_module(f"ptycho_layers.{name}")
        paths += [Path(module.__file__) for module in package.KERNELS.values()]
    return paths


def test_no_backend_code_outside_backends_and_implementations():
    offenders = {}
    for path in sources():
        if relative(path).parts[0] in ALLOWED:
            continue
        lines = backend_uses(path)
        if lines:
            offenders[str(relative(path))] = lines
    assert offenders == {}


def test_the_backend_check_sees_backend_code():
    """The rule above has teeth: it finds the backends' own imports."""
    assert backend_uses(PACKAGE / "backends" / "tensorflow.py")
    assert backend_uses(PACKAGE / "backends" / "__init__.py")
    assert backend_uses(PACKAGE / "torch" / "windows.py")


def test_kernel_math_only_in_kernel_modules():
    """Interpolation is written in the kernels' modules alone: the window
    gather and scatter, batching and the gradients' wiring hold none."""
    kernels = {path.resolve() for path in kernel_modules()}
    offenders = {}
    for path in sources():
        if path.resolve() in kernels or relative(path) == REFERENCE:
            continue
        lines = interpolation_math(path)
        if relative(path) == HOST_OPS:
            # Only the FFT primitives, and only in their own function.
            lines = [line for line in lines if line not in _fft_primitive_lines(path)]
        if lines:
            offenders[str(relative(path))] = lines
    assert offenders == {}


def _fft_primitive_lines(path):
    """The lines of `path`'s `_fft2`, `fft2` and `ifft2` functions."""
    tree = ast.parse(path.read_text())
    return {
        line
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name in ("_fft2", "fft2", "ifft2")
        for line in range(node.lineno, node.end_lineno + 1)
    }


def test_the_kernel_check_sees_kernel_math():
    """The rule above has teeth: it finds each interpolating kernel
    module's weights or FFTs (nearest-neighbour's modules take the window
    as it is: no math to find)."""
    for path in kernel_modules():
        if path.stem != "nearest":
            assert interpolation_math(path), path
    assert interpolation_math(PACKAGE / REFERENCE)


def test_no_private_keras_imports():
    """Keras's public API only (`keras.backend.standardize_dtype`, not
    `keras.src.backend`'s)."""
    offenders = {}
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(name.startswith("keras.src") for name in names):
                offenders.setdefault(str(relative(path)), []).append(node.lineno)
    assert offenders == {}


def test_the_benchmark_lives_outside_the_package():
    """Not in the wheel: no benchmark under `ptycho_layers/`, and the
    packages setuptools finds are `ptycho_layers` and its subpackages."""
    assert not any("benchmark" in part for path in sources() for part in relative(path).parts)
    assert (ROOT / "benchmarks").is_dir()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["ptycho_layers*"]
    init = (PACKAGE / "__init__.py").read_text()
    assert "benchmark" not in init and "sys.argv" not in init


def test_no_module_over_600_lines():
    long = {
        str(relative(path)): count
        for path in sources()
        if (count := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


@pytest.mark.parametrize("name", BACKEND_PACKAGES + ("numpy",))
def test_every_backend_offers_the_same_contract(name):
    """Each backend module exports the same names as TensorFlow's (loaded
    only where that backend is installed), and names an implementation;
    the host's (`numpy`, `backends.on_host`) too."""
    pytest.importorskip(name)
    reference = importlib.import_module("ptycho_layers.backends.tensorflow")
    module = importlib.import_module(f"ptycho_layers.backends.{name}")
    assert sorted(module.__all__) == sorted(reference.__all__)
    for attribute in module.__all__:
        assert hasattr(module, attribute), attribute
    assert module.IMPLEMENTATION in IMPLEMENTATIONS


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_every_implementation_offers_every_kernel(name):
    """Each implementation offers the operators' contract and every
    kernel `operators.KERNELS` names, each kernel module the same names as
    that implementation's bilinear one."""
    if name == "torch":
        pytest.importorskip("torch")
    package = importlib.import_module(f"ptycho_layers.{name}")
    assert sorted(package.__all__) == [
        "KERNELS", "extract", "kernel", "offsets_gradient", "place",
    ]
    assert sorted(package.KERNELS) == sorted(operators.KERNELS)
    reference = package.KERNELS["bilinear"]
    # A kernel with a parameter (Fourier's margin) is an object its module
    # configures; the others are their modules.
    for interpolation in operators.KERNELS:
        spec = operators.kernel_spec(interpolation, 2)
        kernel = package.kernel(spec)
        assert kernel.NAME == spec
        assert package.kernel(kernel.NAME) is kernel
        names = set(reference.__all__)
        if not getattr(kernel, "FUSED_READS", True):
            # Read whole (XLA): no moved rows' share to add.
            names -= {"row_share", "add_row_share"}
        for attribute in sorted(names):
            assert hasattr(kernel, attribute), (spec, attribute)
