"""Gatehouse's Python worker: runs a WSGI app behind the Gatehouse Node front.

    python -m gatehouse_worker --socket PATH --wsgi MODULE:CALLABLE [--threads N] [--chdir DIR]

Standard library only; Python >= 3.9. See docs/python-bridge.md and docs/wsgi.md.
"""
