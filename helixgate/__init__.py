"""HelixGate: cross-cutting code shared by the WES, TRS and DRS services."""

__version__ = "0.1.0"
