"""Users, roles, JWT and API tokens, and the audit log."""
