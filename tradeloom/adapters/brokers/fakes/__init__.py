"""Fake broker servers on 127.0.0.1 speaking Kite's and Fyers' wire formats (test support)."""
