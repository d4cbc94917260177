"""Database: SQLAlchemy 2.x engine, sessions, base model and Alembic migrations."""
