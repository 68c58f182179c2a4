"""The directory search service: ``user_directory/search`` answered from the snapshot each sync leaves.

``config`` (the ``search:`` section), ``snapshot`` (the file), ``index`` (the in-memory prefix index),
``service`` (the aiohttp server behind the proxy).
"""
