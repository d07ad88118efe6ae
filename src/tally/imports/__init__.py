"""Imports from a previous loyalty provider: CSV formats, validation and import jobs.

``formats`` holds what the parsers share (errors, streaming input, value checks, the
downloadable templates); ``customers_csv`` and ``orders_csv`` detect a file's layout from its
header row and stream validated rows or row errors, without touching the database.
"""
