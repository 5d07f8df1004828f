"""Shared runtime of the AOS Evidence Plane services.

One copy for every service: configuration, database, credentials, errors,
pagination, evidence metadata and server bootstrap. Services import from here;
nothing in this package knows which service it serves.
"""
