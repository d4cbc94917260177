"""Organizer: scan a share, categorize, find duplicates, apply and roll back."""
