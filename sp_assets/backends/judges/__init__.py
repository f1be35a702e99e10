"""Judges: rate an image under a policy category (unsafe / safe / invalid, fail-closed)."""
