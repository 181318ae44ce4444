"""The package version, in one place (imported by the package and by modules that record it)."""

__version__ = "0.1.0"
