"""Worked examples for handler authors; not part of the installed package."""
