"""The only socket code: listeners, original destinations, upstream connects."""
