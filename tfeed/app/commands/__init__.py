"""Subcommands of the ``tfeed`` command, one module each.

A subcommand module has ``NAME`` (the word on the command line), ``HELP`` (one
line for ``tfeed --help``), ``add_parser(subparsers)`` (adds and returns its
``argparse`` parser) and ``run(args) -> int`` (the exit status).  Modules import
only argparse-level things at import time; the work (TensorFlow, matplotlib,
servers) is imported inside ``run``.  :mod:`tfeed.app.cli` lists the modules.
"""
