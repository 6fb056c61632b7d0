"""Helpdesk Verify: the command line, the runner and the demo (``helpdesk --help``)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("helpdesk-verify")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
