"""The ``synthdb`` command line: thin click commands over the ``synthdb`` library."""
