"""Django's PostgreSQL backend with a cheaper pool health check (config/postgres/base.py)."""
