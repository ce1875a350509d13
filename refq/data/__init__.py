"""Datasets refq reads from disk (never downloaded at run time)."""
