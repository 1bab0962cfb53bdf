"""The `wanbench` command line: one module per verb."""
