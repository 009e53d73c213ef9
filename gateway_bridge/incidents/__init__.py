"""Incidents: detection rules evaluated continuously, incident records with their lifecycle
and timeline, and the report support writes at the end (docs/INCIDENTS.md)."""
