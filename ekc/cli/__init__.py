"""The command line (``deploy.py``): :mod:`ekc.cli.main` assembles one module per command group."""
