"""Fixtures shared by test modules; the servers behind them are in tests/servers.py."""

from servers import moto_s3, s3_env, webhook_receiver  # noqa: F401 - fixtures
