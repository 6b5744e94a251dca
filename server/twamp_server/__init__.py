"""TWAMP Server and Session-Reflector daemon."""
