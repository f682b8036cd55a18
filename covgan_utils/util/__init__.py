"""Helpers every layer may use: project paths, atomic files and JSON lines, quiet console start, the machine description, per-backend compilation of functions of inputs, notebook setup."""
