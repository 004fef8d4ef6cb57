"""Operator notifications: a digest of dead letters and condition changes, to a webhook."""
