"""`python -m convertkit`. Python puts the working folder first on sys.path; it is taken
off before anything else is imported, so that a stray onnx.py or numpy.py in a model
repository is never imported in place of the real one (`module:NAME` sources still
import from the working folder, last: adapters/python_source.py)."""

import os
import sys

if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from convertkit.cli import main

main()
