"""The triplesmith command line."""
