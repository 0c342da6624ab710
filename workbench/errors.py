"""The one exception type users catch: every message names the problem and the fix."""


class WorkbenchError(ValueError):
    """Bad input or an unusable setup. The Model that raised it stays usable."""


class BackendNotInstalled(WorkbenchError, ImportError):
    """A backend's framework is missing; the message names the pip extra to install."""
