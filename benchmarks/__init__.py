"""Benchmark of patch extraction and placement: this layer against its
peers. A folder of the repository, not of the wheel: run it from the
repository root as ``python -m benchmarks --help`` (see README.md here).

It times, in one process and on one set of inputs, each operator's rows:
for extraction (``--operator extract``, the default) the legacy per-patch
translate, a tiled batch translate, TensorFlow's ``crop_and_resize``,
this layer in each compile mode and a plain copy of an output-sized
array; for placement (``--operator place``) the legacy shift-and-sum,
``tf.tensor_scatter_nd_add``, ``place_patches`` in each mode,
``reassemble``, a copy of the patches and the zeroing of the object.
Every row's output is checked before it is timed.

Modules:

- ``rows``: the harness's rows, written once: `rows.Operator`, the legacy,
  layer and copy rows every table has; ``extract`` and ``place``: what
  each operator supplies (its call, references, estimates, own peers).
- ``measure``: checking and timing a table's rows, their ratios, their
  peak memory (each in a fresh subprocess).
- ``scaling``: the ``--scaling`` report (object size, backward pass) and
  the ``--plot`` sweep, for either operator.
- ``report``: the printed tables and notes, JSON-safe values.
- ``cli``: arguments and ``main``; ``__main__``: ``--backend`` and a quiet
  start.
- ``peers``: the other algorithms, and float64 numpy references of both
  operators; ``case``: the benchmark case; ``backends``: what differs
  between Keras backends; ``timing``: call times, peak memory, progress,
  the machine; ``working_memory``: the XLA temp of a compiled pass;
  ``startup``: ``quiet_start``, Keras without TensorFlow's start-up log.
- ``internals``: the only module that imports private code of
  ``ptycho_layers``.

This file imports nothing, so that ``__main__`` runs before Keras loads.
"""
