"""Steps that run inside a toolchain's own virtual environment (convertkit.toolchains).

They are imported there with nothing of the main environment: a step module imports only
the standard library, numpy, its toolkit's packages, ``convertkit.errors`` and
``convertkit.sample_files``, and keeps
to the oldest Python a toolchain needs (3.10 for tpu-mlir). This package and
``convertkit/__init__.py`` import nothing, so importing a step costs nothing more.
"""
