"""The backends' persistent compilation caches: an opt-in, process-wide
setting that keeps the programs XLA compiles on disk, in a directory the
caller names, for later processes to load instead of compiling.

XLA compiles a program per input shape, and in a fresh process that
compile is most of an operator's first call (docs/performance.md, "The
first call"). A PtychoPINN user calls `reassemble_position` once per
dataset, often one process per dataset: with the cache, a process after
the first loads the programs an earlier one compiled for the same shapes.
Nothing is written anywhere unless this is called, and then only under
the directory given. PyTorch compiles nothing per shape here
(`torch.compile` keeps caches of its own).
"""

import os

from ptycho_layers import backends

__all__ = ["persistent_cache"]


def persistent_cache(directory):
    """Keep the programs the backend's XLA compiles from now on in
    `directory`, and load those compiled there before, by this or an
    earlier process, for the same shapes and versions.

    Process-wide, for the rest of the process, and for every program the
    backend compiles, the caller's own included. On JAX it sets
    `jax_compilation_cache_dir` and caches programs however fast they
    compiled (JAX's default keeps only those that took a second or more;
    the operators' take less). On TensorFlow it sets XLA's
    `--tf_xla_persistent_cache_directory` in `TF_XLA_FLAGS`, which
    TensorFlow reads once, when it first looks at its devices (its first
    operation, or `tf.config.list_physical_devices`): call it right after
    importing the package. Called after TensorFlow's first operation it
    raises a RuntimeError (the setting would be ignored); after a mere
    device listing it cannot tell, and the cache stays empty.

    Example (a setting for the whole process, so here only its check of
    the argument runs; `tests/test_compilation.py` runs the cache in
    fresh processes):

    >>> from ptycho_layers import persistent_cache
    >>> persistent_cache(42)
    Traceback (most recent call last):
    ...
    ValueError: `directory` must be a path, a non-empty str or os.PathLike. Received: directory=42

    In a script: `persistent_cache(os.path.expanduser("~/.cache/ptycho"))`
    first, then the operators.

    Args:
        directory: a path (str or os.PathLike), made if missing. Another
            process may use the same directory at the same time.

    Returns:
        True where the backend compiles (TensorFlow, JAX) and the cache is
        set; False on PyTorch, where nothing is changed.
    """
    if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
        raise ValueError(
            "`directory` must be a path, a non-empty str or os.PathLike. "
            f"Received: directory={directory!r}"
        )
    path = os.path.abspath(os.fspath(directory))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            "`directory` must be a directory, or not exist yet; it is a file. "
            f"Received: directory={directory!r}"
        )
    return backends.current().persistent_cache(path)
