"""Imports from a previous loyalty provider: CSV formats, validation and import jobs.

``formats`` and ``values`` hold what the parsers share (errors, streaming input, value checks,
the downloadable templates); ``customers_csv`` and ``orders_csv`` detect a file's layout from
its header row and stream validated rows or row errors, without touching the database.
``service`` is the front door to the import jobs; its docstring names the module of each step.
"""
