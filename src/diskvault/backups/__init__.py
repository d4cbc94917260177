"""Backups: full and incremental QCOW2 chains with change tracking, retention,
immutability, verification, a second copy and whole-disk restore."""
