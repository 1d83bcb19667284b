"""Pluggable extraction chains, the prompt and the output parser."""
