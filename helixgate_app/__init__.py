"""The composition root of HelixGate: the CLI, ``helixgate serve``, the server and the demo,
and the one list of the services this product is made of (``helixgate_app.services``).

Nothing below this package imports it; it may import every service and the core.
"""
