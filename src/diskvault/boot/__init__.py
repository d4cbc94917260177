"""Diskless boot: machines, per-machine writeback layers, image versions, iPXE scripts."""
