"""Thin wrappers around external tools: one module per tool."""
