"""Benchmark of patch extraction and placement: this layer against its
peers.

Run it as ``python -m benchmarks --help``. It times, in one
process and on one set of inputs, the legacy per-patch translate, a tiled
batch translate, TensorFlow's ``crop_and_resize`` (TensorFlow backend only),
this layer's vectorized kernel (eager and compiled) and a plain copy of an
output-sized array, and prints one table. Every row's output is checked
against the vectorized kernel before it is timed.

With ``--operator place`` it times placement instead, the adjoint: the
legacy per-patch shift-and-sum, ``tf.tensor_scatter_nd_add`` (TensorFlow
only), ``place_patches`` (eager and compiled), ``reassemble``, a copy of the
patches and the zeroing of the object, each checked likewise against
``place_patches``.

Modules:

- ``backends``: what differs between Keras backends (compiling, waiting for
  results, copies, gradients, versions).
- ``peers``: the other algorithms, written here, and float64 numpy
  references of extraction and placement.
- ``case``: the benchmark case (object, offsets).
- ``rows``: the rows of the table, each built for a case.
- ``placement_rows``: the rows of the placement table.
- ``measure``: checking and timing the rows, their ratios, their peak memory.
- ``timing``: medians, peak memory, the progress bar, machine information.
- ``scaling``: the object-size and gradient report and the ``--plot`` sweeps.
- ``startup``: ``quiet_start``, Keras without TensorFlow's start-up log lines
  (also loaded by the examples).
- ``placement_scaling``: the same report for placement, with the zeroing
  of the object timed alongside.
- ``working_memory``: the XLA temp of a compiled forward pass.
- ``report``: the printed tables and notes, JSON-safe values.
- ``cli``: arguments and ``main``, which runs it all and writes the JSON file.
"""
