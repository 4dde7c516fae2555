"""Parsers for the open-data files of the klima.daten platform (file message in, readings out)."""
