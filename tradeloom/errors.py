"""Exceptions grouped by what the operator must do."""


class TradeloomError(Exception):
    """Base of every error tradeloom raises on purpose."""


class ConfigError(TradeloomError):
    """Bad settings or bad input: stop and fix the configuration or the command line."""


class InputError(ConfigError):
    """A file, column, instrument or value given by the user is wrong."""


class DatabaseUnavailableError(TradeloomError):
    """The database cannot be reached: retry later; nothing was written."""


class DataQualityError(TradeloomError):
    """Data failed a quality gate: fail the task, quarantine the rows."""


class TransientBrokerError(TradeloomError):
    """The broker is briefly unavailable: back off and retry reads and cancels (never placements)."""


class OrderRejectedError(TradeloomError):
    """The broker refused an order: do not retry it."""


class InvariantViolation(TradeloomError):
    """Something that must never happen did: stop trading, exit, restart and reconcile."""
