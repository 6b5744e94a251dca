"""TWAMP Control-Client and Session-Sender command line."""
