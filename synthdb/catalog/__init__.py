"""The catalog service layer: every SQL statement synthdb runs on its catalog lives in this package.

Modules are named for what they own: ``runs`` (one run lifecycle), ``datasets``, ``samples`` (samples and
identities as jobs read them), ``shards`` (the committed-shards query), ``protocols``, ``issues``,
``indexes``, ``directions``, ``model_rows``, ``commits`` (the catalog half of the shard commit
protocol), ``imports`` and ``bulk`` (many rows per round trip), ``lookup`` (the chunked ``IN``),
``tables``; below them ``schema`` (ORM and enums), ``engine`` and ``migrate``. Functions take a
:class:`Catalog` and return plain values (dataclasses, named tuples, arrays), never SQLAlchemy rows.
"""

from synthdb.catalog.engine import Catalog

__all__ = ["Catalog"]
