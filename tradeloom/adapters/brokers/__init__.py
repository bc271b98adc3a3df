"""Broker adapters behind `tradeloom.broker.Broker`: Zerodha Kite, Fyers, and fake servers for tests."""
