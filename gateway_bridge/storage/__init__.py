"""The bridge's storage: all SQL (queries.py), thin typed calls (repo.py), migrations."""
