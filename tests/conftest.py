import importlib.util
import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# float64/complex128 objects need JAX's 64-bit mode; without it JAX quietly
# computes them in 32 bits. (No effect on the other backends.)
os.environ.setdefault("JAX_ENABLE_X64", "1")

import keras  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {BACKEND}"


@pytest.fixture(autouse=True)
def _float32_policy():
    """Each test starts and ends with the default dtype policy."""
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(autouse=True)
def _first_calls_compiled(request, monkeypatch):
    """Eager first calls compile, as every later call does, so each test
    checks the compiled programs users run warm. A call at shapes never met
    runs on the host instead where it is small (`backends.batch_sizes`);
    tests of that path ask for the `first_calls_on_host` fixture."""
    if "first_calls_on_host" in request.fixturenames:
        return
    from ptycho_layers.backends import batch_sizes

    monkeypatch.setattr(batch_sizes, "HOST_ELEMENTS", -1)


@pytest.fixture
def first_calls_on_host():
    """A small eager call at shapes never met runs on the host, as it does
    outside the tests (`_first_calls_compiled`)."""
    from ptycho_layers.backends import batch_sizes

    return batch_sizes.HOST_ELEMENTS


tensorflow_only = pytest.mark.skipif(
    BACKEND != "tensorflow", reason="TensorFlow-only feature"
)


# Optional packages the tests may need, and the extra that installs each.
EXTRAS = {"jax": "jax", "torch": "torch", "matplotlib": "plot", "scipy": "test"}


def requires(module):
    """Mark a test that needs the optional `module`: skipped, saying which
    extra installs it, where it is not installed (the README's own install,
    `.[test,plot]`, has neither JAX nor PyTorch)."""
    top = module.split(".")[0]
    install = f'pip install -e ".[{EXTRAS[top]}]"' if top in EXTRAS else f"pip install {top}"
    return pytest.mark.skipif(
        importlib.util.find_spec(top) is None,
        reason=f"needs {top}, which is not installed ({install})",
    )


def covering(cases, keys):
    """`cases` (tuples) as pytest parameters: those that first cover each
    key of `keys(case)` (say, every (axis value, dtype) pair) run by
    default; the others, which only repeat covered combinations, are marked
    slow (`pytest -m slow` runs the whole product). Each case compiles its
    own XLA programs, about half a second on JAX."""
    covered = set()
    params = []
    for case in cases:
        new = set(keys(case)) - covered
        covered |= new
        params.append(case if new else pytest.param(*case, marks=pytest.mark.slow))
    return params


class _JaxCompiles(logging.Handler):
    """Counts XLA's compiles of the operators (`jit(operator)`) in JAX's
    compile log."""

    count = 0

    def emit(self, record):
        if "XLA compilation of jit(operator)" in record.getMessage():
            self.count += 1


@pytest.fixture
def compiled_programs():
    """`programs(operator)`: how many programs XLA has compiled for the
    operators (one per input shape). On JAX, every operator's compiles
    during the test, from its compile log (`jax.jit`'s own cache also
    keeps an entry per argument kind, NumPy or JAX, without compiling);
    on TensorFlow, the operator's traces (one per shape under
    `jit_compile`)."""
    if BACKEND == "tensorflow":
        yield lambda operator: operator.forward.call.experimental_get_tracing_count()
        return
    if BACKEND != "jax":
        pytest.skip("PyTorch compiles nothing per shape")
    import jax

    handler = _JaxCompiles()
    logger = logging.getLogger("jax")
    saved = jax.config.jax_log_compiles
    jax.config.update("jax_log_compiles", True)
    logger.addHandler(handler)
    try:
        yield lambda operator: handler.count
    finally:
        logger.removeHandler(handler)
        jax.config.update("jax_log_compiles", saved)
