"""wanbench's harness: suites -> isolated measured runs -> results (with quality against references)."""

from harness.results import read_results, write_tables
from harness.suite import Case, Suite, load_suite, parse_suite

__all__ = ["Case", "Suite", "load_suite", "parse_suite", "read_results", "write_tables"]
