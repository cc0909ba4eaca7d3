"""Applications on top of the pipeline: the ``tfeed`` command (:mod:`~tfeed.app.cli`,
:mod:`~tfeed.app.commands`), the demo, cache warming, Keras callbacks,
progress bars and viewers."""
