"""Zerodha Kite Connect adapter (the real `kiteconnect` SDK)."""
