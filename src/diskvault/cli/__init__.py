"""The ``diskvault`` command line: one module per command group."""
