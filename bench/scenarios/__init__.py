"""The scenarios of ``bench/run.py``, one module each; :mod:`.common` holds what they share."""
