"""regprune's library: what the flows (flows/) and tasks (tasks/) share.

Storage backends (``regprune.storage``), the storage layout (``regprune.layout``), cluster
metadata (``regprune.metadata``), the snapshot tables (``regprune.tables``), the SQL models
(``regprune.models``), the storage lock, the command line (``regprune.cli``) and the demo
registry generator (``regprune.demo``). Imports point one way: cli -> flows -> tasks -> library.
"""
