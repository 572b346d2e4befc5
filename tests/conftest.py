"""Fixtures shared by test modules; the servers behind them are in tests/servers.py (S3, webhooks)
and tests/janus_helpers.py (Janus in a sealed network)."""

from janus_helpers import janus, sealed_network  # noqa: F401 - fixtures
from servers import moto_s3, s3_env, webhook_receiver  # noqa: F401 - fixtures
