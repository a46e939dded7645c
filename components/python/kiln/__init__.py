"""What Kiln gives Python scripts beyond the standard library: `kiln.http`."""

from . import http  # noqa: F401
