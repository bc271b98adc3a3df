"""Implementations of the ports: the Postgres/Timescale store, data sources, brokers, the registry."""
