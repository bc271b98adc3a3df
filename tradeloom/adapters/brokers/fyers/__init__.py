"""Fyers API v3 adapter (the real `fyers-apiv3` SDK)."""
