"""Incidents: correlation, lifecycle, silences."""
