"""The audit log: who changed what, when, with the values before and after.

Importing the package registers the recorder's session listeners (``recorder.py``), so every
unit of work that carries an actor (``db.engine.unit_of_work(..., actor=...)``) records the
changes of the models their domains declared with ``registry.audited``.
"""

from tally.audit import recorder as _recorder  # noqa: F401  (registers the listeners)
