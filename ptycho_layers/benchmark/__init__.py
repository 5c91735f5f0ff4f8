"""Benchmark of patch extraction: this layer against its peers.

Run it as ``python -m ptycho_layers.benchmark --help``. It times, in one
process and on one set of inputs, the legacy per-patch translate, a tiled
batch translate, TensorFlow's ``crop_and_resize`` (TensorFlow backend only),
this layer's vectorized kernel (eager and compiled) and a plain copy of an
output-sized array, and prints one table. Every row's output is checked
against the vectorized kernel before it is timed.

Modules:

- ``backends``: what differs between Keras backends (compiling, waiting for
  results, copies, gradients, versions).
- ``peers``: the other algorithms, written here, and a float64 numpy
  reference.
- ``case``: the benchmark case (object, offsets).
- ``rows``: the rows of the table, each built for a case.
- ``measure``: checking and timing the rows, their ratios, their peak memory.
- ``timing``: medians, peak memory, the progress bar, machine information.
- ``scaling``: the object-size and gradient report and the ``--plot`` sweeps.
- ``report``: the printed tables and notes, JSON-safe values.
- ``cli``: arguments and ``main``, which runs it all and writes the JSON file.
"""
