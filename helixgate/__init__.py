"""HelixGate: cross-cutting code shared by the WES, TRS and DRS services."""

__version__ = "0.1.0"

import warnings

# connexion imports starlette's test client at import time, which warns about httpx
warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
