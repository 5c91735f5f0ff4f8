"""``python -m benchmarks``: Keras started quietly, on the backend that
``--backend`` names, then the command line (`cli.main`).

Keras picks its backend once, when it is first imported; nothing has
imported it yet when this file runs (``benchmarks/__init__.py`` imports
nothing), so ``--backend`` only has to set ``KERAS_BACKEND`` first.
"""

import argparse
import os
import sys


def requested_backend(argv):
    """The value of --backend in `argv`, or None."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--backend")
    return parser.parse_known_args(argv)[0].backend


if __name__ == "__main__":
    backend = requested_backend(sys.argv[1:])
    if backend is not None:
        os.environ["KERAS_BACKEND"] = backend
    from benchmarks.startup import quiet_start

    quiet_start()
    from benchmarks import cli

    sys.exit(cli.main(sys.argv[1:]))
