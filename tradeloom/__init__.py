"""tradeloom core: domain types, features, the decision engine, risk, sizing and costs. No I/O here."""

__version__ = "0.1.0"
