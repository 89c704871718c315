"""What SQL ``synthdb query`` and ``synthdb export --where`` accept, decided on DuckDB's own parse tree.

Every statement is parsed by DuckDB's parser (``extract_statements`` for the statement kind,
``json_serialize_sql`` for the tree) and must be a plain SELECT, or ``EXPLAIN`` of one. String matching
never decides: DuckDB classifies ``EXPLAIN ANALYZE COPY ...`` as an EXPLAIN and ``PRAGMA`` as a SELECT,
so an EXPLAIN is taken apart with DuckDB's tokenizer and the statement it explains is checked as a SELECT
of its own; what runs is ``EXPLAIN`` followed by exactly that checked text.

The tree is walked in full (CTEs, subqueries, set operations, lambdas) against allow-lists:

- tables: the query views and the catalog schema's tables only (``catalog.<table>`` on DuckDB, the bare
  names on PostgreSQL), or a CTE name *in scope*. Scope follows DuckDB's binder, checked by experiment:
  a CTE sees the CTEs before it in its WITH, never those after it and never itself, except the recursive
  side of ``WITH RECURSIVE``; a name out of scope would bind to a real relation (``duckdb_databases``,
  a file, a SQLite database), so it is refused.
- table functions: ``unnest``, ``range``, ``generate_series`` and JSON walkers. ``read_csv``, ``read_text``,
  ``glob``, ``sqlite_scan``, ``sqlite_attach``, ``postgres_query``/``_scan``/``_attach``/``_execute``,
  ``query()``, ``duckdb_databases()`` (which prints a PostgreSQL DSN) and every other one are refused.
- scalar, aggregate and window functions: DuckDB's own built-in functions, read from a pristine
  connection (so nothing an extension adds), minus those that read settings, variables or logs, sleep,
  plan SQL text or touch sequences. On PostgreSQL the same list, minus every ``pg_*``, ``lo_*``,
  ``dblink*``, ``set_config``, ``*_to_xml`` and ``ts_stat``/``ts_rewrite`` (which run SQL text), plus the
  common JSON and formatting functions PostgreSQL names differently.
- node kinds: every table-reference, query-node and expression kind must be one the walker knows;
  anything new (a statement nested in a query, a Python object scan) is refused, not ignored.

This is the first of several layers: the connections are read-only and sandboxed as well
(:mod:`synthdb.analysis.query`), because a parser is only as good as its author's imagination.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import duckdb

from synthdb.errors import SynthdbError

QUERY_VIEWS = frozenset({"embeddings", "latents", "nearest", "stats"})
QUERY_MACROS = frozenset({"angle"})

# Functions that read the engine's settings, variables or logs, wait, plan SQL given as text (binding
# can open files), or touch sequences. Everything else DuckDB ships is a pure function of its arguments.
_DENIED = frozenset(
    {
        "current_setting",
        "getvariable",
        "write_log",
        "parse_duckdb_log_message",
        "sleep_ms",
        "pg_sleep",
        "json_serialize_plan",
        "json_serialize_sql",
        "json_deserialize_sql",
        "nextval",
        "currval",
        "setval",
    }
)
# On PostgreSQL these prefixes name server administration: files, large objects, signals, advisory locks,
# notifications, settings (set_config('role', ...) would undo a role switch), other databases, and
# functions that run SQL given as text.
_POSTGRES_DENIED_PREFIXES = (
    "pg_",
    "lo_",
    "dblink",
    "set_config",
    "current_setting",
    "query_to_xml",
    "table_to_xml",
    "schema_to_xml",
    "database_to_xml",
    "cursor_to_xml",
    "ts_stat",
    "ts_rewrite",
    "txid_",
    "binary_upgrade",
)
_POSTGRES_EXTRA_FUNCTIONS = frozenset(
    {
        "jsonb_extract_path",
        "jsonb_extract_path_text",
        "jsonb_array_length",
        "jsonb_typeof",
        "jsonb_build_object",
        "jsonb_build_array",
        "jsonb_agg",
        "jsonb_object_agg",
        "jsonb_pretty",
        "to_jsonb",
        "json_build_object",
        "json_build_array",
        "json_agg",
        "json_object_agg",
        "json_typeof",
        "to_char",
        "to_number",
        "to_date",
        "initcap",
        "btrim",
        "char_length",
        "octet_length",
        "string_to_array",
        "array_to_string",
        "array_position",
        "cardinality",
        "justify_days",
        "justify_hours",
        "justify_interval",
        "make_interval",
        "clock_timestamp",
        "statement_timestamp",
        "transaction_timestamp",
        "percentile_cont",
        "percentile_disc",
        "mode",
        "bool_and",
        "bool_or",
        "every",
    }
)
_DUCKDB_TABLE_FUNCTIONS = frozenset({"unnest", "range", "generate_series", "json_each", "json_tree"})
_POSTGRES_TABLE_FUNCTIONS = frozenset(
    {
        "unnest",
        "generate_series",
        "generate_subscripts",
        "regexp_split_to_table",
        "json_each",
        "json_each_text",
        "jsonb_each",
        "jsonb_each_text",
        "json_array_elements",
        "json_array_elements_text",
        "jsonb_array_elements",
        "jsonb_array_elements_text",
        "json_object_keys",
        "jsonb_object_keys",
    }
)
_TABLE_REFS = frozenset(
    {"BASE_TABLE", "JOIN", "SUBQUERY", "TABLE_FUNCTION", "EMPTY", "EXPRESSION_LIST", "PIVOT", "SHOW_REF"}
)
_QUERY_NODES = frozenset({"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE"})
_ORDER_TYPES = frozenset({"ASCENDING", "DESCENDING", "ORDER_DEFAULT"})
_EXPRESSION_CLASSES = frozenset(
    {
        "CONSTANT",
        "COLUMN_REF",
        "FUNCTION",
        "WINDOW",
        "CAST",
        "COMPARISON",
        "CONJUNCTION",
        "OPERATOR",
        "CASE",
        "BETWEEN",
        "SUBQUERY",
        "STAR",
        "LAMBDA",
        "LAMBDA_REF",
        "COLLATE",
        "POSITIONAL_REFERENCE",
        "PARAMETER",
        "DEFAULT",
    }
)
_REFUSED = "synthdb query is read-only and runs plain SELECT (and EXPLAIN of one) only"


@dataclass(frozen=True)
class Policy:
    """What one engine may name: tables (by qualifier), table functions, scalar functions.

    ``unqualified`` names are reachable without a qualifier; ``schemas`` maps a qualifier (catalog and
    schema, as the parser gives them) to the table names it reaches there. ``table_hints`` are the names
    "did you mean" suggests.
    """

    unqualified: frozenset[str]
    schemas: dict[tuple[str, str], frozenset[str]]
    table_functions: frozenset[str]
    functions: frozenset[str]
    table_hints: frozenset[str]

    def table_allowed(self, catalog: str, schema: str, name: str) -> bool:
        if (catalog, schema) == ("", "") and name in self.unqualified:
            return True
        return name in self.schemas.get((catalog, schema), frozenset())


@functools.cache
def _duckdb_functions() -> frozenset[str]:
    """DuckDB's built-in scalar, aggregate, window and macro functions, from a connection with no extension
    loaded beyond those compiled in."""
    con = duckdb.connect(":memory:", config={"autoload_known_extensions": False})
    try:
        rows = con.execute(
            "SELECT DISTINCT lower(function_name) FROM duckdb_functions() "
            "WHERE function_type IN ('scalar', 'aggregate', 'macro') AND internal"
        ).fetchall()
    finally:
        con.close()
    return frozenset(name for (name,) in rows) - _DENIED


def duckdb_policy(catalog_tables: Iterable[str]) -> Policy:
    """The DuckDB engine: the views, the catalog's tables under ``catalog.``, DuckDB's functions.

    Names under ``catalog.`` are checked too: DuckDB tries a file replacement scan for a qualified name
    it does not find (``catalog."x.db"`` reads the file ``catalog.x.db``), so only real table names pass.
    """
    tables = frozenset(catalog_tables)
    return Policy(
        unqualified=QUERY_VIEWS,
        schemas={("", "catalog"): tables, ("catalog", "main"): tables, ("catalog", "public"): tables},
        table_functions=_DUCKDB_TABLE_FUNCTIONS,
        functions=_duckdb_functions() | QUERY_MACROS,
        table_hints=QUERY_VIEWS | {f"catalog.{name}" for name in tables},
    )


def postgres_policy(catalog_tables: Iterable[str]) -> Policy:
    """``--engine catalog`` on PostgreSQL: the catalog's own tables by name, never ``pg_catalog`` views
    (``pg_authid``, ``pg_stat_activity``, ``pg_file_settings``)."""
    tables = frozenset(catalog_tables)
    functions = {
        name for name in _duckdb_functions() if not name.startswith(_POSTGRES_DENIED_PREFIXES)
    } | _POSTGRES_EXTRA_FUNCTIONS
    return Policy(
        unqualified=tables,
        schemas={("", "public"): tables},
        table_functions=_POSTGRES_TABLE_FUNCTIONS,
        functions=frozenset(functions),
        table_hints=tables,
    )


# ---------------------------------------------------------------------------------------------- statements


def checked_statements(sql: str, policy: Policy) -> list[str]:
    """The statements of ``sql``, each proven a SELECT (or EXPLAIN of one) within ``policy``.

    Returns the texts to run: a SELECT as written, an EXPLAIN as ``EXPLAIN`` + the checked SELECT.
    """
    parser = duckdb.connect(":memory:")
    try:
        statements = _extract(parser, sql)
        if not statements:
            raise SynthdbError("the query is empty: pass one or more SELECT statements")
        return [_checked(parser, statement, policy) for statement in statements]
    finally:
        parser.close()


def _extract(parser: duckdb.DuckDBPyConnection, sql: str) -> list[Any]:
    try:
        return parser.extract_statements(sql)
    except duckdb.Error as exc:
        raise SynthdbError(f"cannot parse the query: {one_line(str(exc))}") from None


def _checked(parser: duckdb.DuckDBPyConnection, statement: Any, policy: Policy) -> str:
    kind = statement.type
    if kind == duckdb.StatementType.SELECT:
        check_select(parser, statement.query, policy)
        return statement.query
    if kind == duckdb.StatementType.EXPLAIN:
        inner = _explained(statement.query)
        inner_statements = _extract(parser, inner)
        if len(inner_statements) != 1 or inner_statements[0].type != duckdb.StatementType.SELECT:
            raise SynthdbError(f"{_REFUSED}: EXPLAIN only explains a SELECT here")
        check_select(parser, inner, policy)
        return f"EXPLAIN {inner}"
    raise SynthdbError(
        f"{_REFUSED}: {kind.name} statements are refused; change the catalog through synthdb commands"
    )


def _explained(text: str) -> str:
    """The statement an EXPLAIN explains, found with DuckDB's tokenizer (comments are not tokens)."""
    tokens = duckdb.tokenize(text)
    if len(tokens) < 2 or _word(text, tokens[0][0]).upper() != "EXPLAIN":
        raise SynthdbError(f"{_REFUSED}: this EXPLAIN cannot be taken apart; write EXPLAIN SELECT ...")
    start = tokens[1][0]
    second = _word(text, start).upper()
    if second in ("ANALYZE", "ANALYSE"):
        raise SynthdbError(f"{_REFUSED}: EXPLAIN ANALYZE runs the statement it explains; use EXPLAIN")
    if text[start] == "(":
        raise SynthdbError(f"{_REFUSED}: EXPLAIN options are refused; write EXPLAIN SELECT ...")
    return text[start:]


def _word(text: str, start: int) -> str:
    end = start
    while end < len(text) and (text[end].isalnum() or text[end] == "_"):
        end += 1
    return text[start:end]


def parse_tree(parser: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    """DuckDB's parse tree of one SELECT statement (``json_serialize_sql``)."""
    text = parser.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0]
    try:
        tree = json.loads(text)
    except RecursionError:
        raise SynthdbError(f"{_REFUSED}: the query nests too deeply to be checked; flatten it") from None
    if tree.get("error"):
        raise SynthdbError(
            f"{_REFUSED}: this statement is not a plain SELECT ({tree.get('error_message')}); "
            "PRAGMA, SHOW and PIVOT statements are refused"
        )
    if len(tree["statements"]) != 1:
        raise SynthdbError(f"{_REFUSED}: one statement was expected here")
    return tree["statements"][0]


def check_select(parser: duckdb.DuckDBPyConnection, sql: str, policy: Policy) -> dict[str, Any]:
    """Walk the SELECT's whole tree against ``policy``; return the tree."""
    tree = parse_tree(parser, sql)
    _Walker(policy).walk(tree, frozenset())
    return tree


# ---------------------------------------------------------------------------------------------- the walk


class _Walker:
    """One pass over a parse tree; raises SynthdbError at the first thing the policy does not allow.

    The walk keeps its own stack of (node, CTE names in scope), so a deeply nested query cannot exhaust
    Python's recursion limit.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.pending: list[tuple[Any, frozenset[str]]] = []

    def walk(self, node: Any, scope: frozenset[str]) -> None:
        self.pending.append((node, scope))
        while self.pending:
            item, visible = self.pending.pop()
            if isinstance(item, list):
                self.pending.extend((child, visible) for child in item)
            elif isinstance(item, dict):
                self._dict(item, visible)

    def _dict(self, node: dict[str, Any], scope: frozenset[str]) -> None:
        if "class" in node:
            self._expression(node, scope)
            return
        kind = node.get("type")
        if not isinstance(kind, str) or kind in _ORDER_TYPES or kind.endswith(("_MODIFIER", "_TYPE_INFO")):
            self._children(node, scope)
        elif kind in _QUERY_NODES:
            self._query_node(node, scope)
        elif kind in _TABLE_REFS:
            self._table_ref(node, scope)
        else:
            raise SynthdbError(f"{_REFUSED}: a {kind} in the query is refused")

    def _children(self, node: dict[str, Any], scope: frozenset[str], skip: tuple[str, ...] = ()) -> None:
        self.pending.extend((value, scope) for key, value in node.items() if key not in skip)

    def _query_node(self, node: dict[str, Any], scope: frozenset[str]) -> None:
        entries = (node.get("cte_map") or {}).get("map") or []
        visible = scope
        for entry in entries:  # each CTE sees the ones before it, as DuckDB binds them
            self.pending.append((entry["value"], visible))
            visible = visible | {entry["key"].lower()}
        if node["type"] == "RECURSIVE_CTE_NODE":
            self._children(node, visible, skip=("cte_map", "right"))
            self.pending.append((node.get("right"), visible | {node["cte_name"].lower()}))
            return
        self._children(node, visible, skip=("cte_map",))

    def _table_ref(self, node: dict[str, Any], scope: frozenset[str]) -> None:
        kind = node["type"]
        if kind == "BASE_TABLE":
            self._base_table(node, scope)
        elif kind == "TABLE_FUNCTION":
            function = node["function"]
            name = self._function_name(function)
            if name not in self.policy.table_functions:
                raise SynthdbError(
                    f"{_REFUSED}: the table function {name}() is refused (allowed: "
                    f"{', '.join(sorted(self.policy.table_functions))}); query the views and catalog tables"
                )
            self.pending.extend((function.get(key), scope) for key in ("children", "filter", "order_bys"))
            self._children(node, scope, skip=("function",))
        elif kind == "SHOW_REF" and node.get("query") is None:
            raise SynthdbError(f"{_REFUSED}: SHOW is refused; DESCRIBE a SELECT or a view instead")
        else:
            self._children(node, scope)

    def _base_table(self, node: dict[str, Any], scope: frozenset[str]) -> None:
        if node.get("at_clause"):
            raise SynthdbError(f"{_REFUSED}: AT (time travel) clauses are refused")
        catalog, schema = node.get("catalog_name", "").lower(), node.get("schema_name", "").lower()
        name = node["table_name"].lower()
        if (catalog, schema) == ("", "") and name in scope:
            return
        if self.policy.table_allowed(catalog, schema, name):
            return
        written = ".".join(part for part in (catalog, schema, node["table_name"]) if part)
        hint = _hint(name, self.policy.table_hints)
        raise SynthdbError(f"the table {written!r} is unknown or refused in synthdb query{hint}")

    def _expression(self, node: dict[str, Any], scope: frozenset[str]) -> None:
        if node["class"] not in _EXPRESSION_CLASSES:
            raise SynthdbError(f"{_REFUSED}: a {node['class']} expression is refused")
        if node["class"] in ("FUNCTION", "WINDOW"):
            name = self._function_name(node)
            if name not in self.policy.functions:
                raise SynthdbError(
                    f"the function {name}() is unknown or refused in synthdb query"
                    f"{_hint(name, self.policy.functions)}"
                )
        self._children(node, scope)

    @staticmethod
    def _function_name(node: dict[str, Any]) -> str:
        """The function's name; a qualifier other than ``main`` (which DuckDB's own syntax uses for
        ``[...]`` and ``{...}``) is refused, so a name can only mean the built-in one."""
        name = str(node.get("function_name", "")).lower()
        qualifier = (str(node.get("catalog") or "").lower(), str(node.get("schema") or "").lower())
        if qualifier not in (("", ""), ("", "main")):
            written = ".".join(part for part in (*qualifier, name) if part)
            raise SynthdbError(f"{_REFUSED}: qualified functions ({written}) are refused")
        return name


def _hint(name: str, known: Iterable[str]) -> str:
    """A "did you mean" for a refused name, matched on the last part (``sample`` -> ``catalog.sample``)."""
    by_last = {full.rsplit(".", 1)[-1]: full for full in sorted(known)}
    close = difflib.get_close_matches(name.lower(), list(by_last), n=1, cutoff=0.75)
    return f'; Did you mean "{by_last[close[0]]}"?' if close else ""


def one_line(message: str) -> str:
    """An engine's error on one line, hints kept: the lines before DuckDB's ``LINE n:`` excerpt joined."""
    kept = []
    for line in message.splitlines():
        if line.startswith("LINE ") or line.strip().startswith("^"):
            break
        if line.strip():
            kept.append(line.strip())
    return " ".join(kept) or message.strip().replace("\n", " ")


# ------------------------------------------------------------------------------------------ embedded SQL


def embed_expression(template: str, expression: str, policy: Policy) -> str:
    """Put ``expression`` into ``template`` (where ``{expr}`` stands) and prove it stayed an expression.

    The assembled statement is parsed, not the fragment: it must have exactly the tree of the template
    with a placeholder, except below the placeholder's own node. A fragment that closes a parenthesis,
    a quote or the statement, or comments out the rest, changes the tree outside that node (or breaks the
    parse) and is refused. The whole statement then passes :func:`check_select` like any query.
    """
    sql = template.format(expr=expression)
    reference = template.format(expr="TRUE")
    parser = duckdb.connect(":memory:")
    try:
        statements = _extract(parser, sql)
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            raise SynthdbError("it must be one expression, not statements")
        tree = check_select(parser, sql, policy)
        expected = parse_tree(parser, reference)
    finally:
        parser.close()
    try:
        same = _without_slot(tree) == _without_slot(expected)
    except RecursionError:
        raise SynthdbError("it nests too deeply to be checked; flatten it") from None
    if not same:
        raise SynthdbError("it must be one expression that stays inside its parentheses")
    return sql


def _without_slot(tree: dict[str, Any]) -> Any:
    """The tree with the placeholder's subtree (the child of the template's CAST) blanked, and no source
    positions."""
    tree = json.loads(json.dumps(tree))
    where = tree.get("node", {}).get("where_clause") or {}
    children = where.get("children") or []
    if children and children[-1].get("class") == "CAST":
        children[-1]["child"] = None
    return _strip_locations(tree)


def _strip_locations(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_locations(v) for k, v in node.items() if k != "query_location"}
    if isinstance(node, list):
        return [_strip_locations(v) for v in node]
    return node


def lexical_refusal(text: str) -> str | None:
    """Why a fragment meant to be one expression looks like more, from DuckDB's tokenizer; None if clean.

    These checks only make the usual mistakes read well (a ``;``, a comment, ``$`` quoting or
    parameters, a stray parenthesis); :func:`embed_expression` is what keeps the fragment an expression.
    """
    tokens = duckdb.tokenize(text)
    depth = 0
    for start, _kind in tokens:
        char = text[start]
        if char == ";":
            return "';' would end the statement"
        if char in "$?":
            return f"'{char}' (parameters and dollar quoting) is not allowed"
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return "a ')' closes more than it opened"
    if depth:
        return "unbalanced parentheses"
    if _has_comment(text, tokens):
        return "comments are not allowed"
    return None


def _has_comment(text: str, tokens: list[tuple[int, Any]]) -> bool:
    """Whether ``text`` holds a ``--`` or ``/*`` comment outside its quoted literals.

    The tokenizer skips comments, so they lie between tokens; a literal's own end is found by asking the
    parser where a complete literal stops (:func:`_literal_end`), so quotes inside it never confuse this.
    """
    bounds = [start for start, _ in tokens] + [len(text)]
    gaps = [text[: bounds[0]]]
    parser = duckdb.connect(":memory:")
    try:
        for (start, _kind), following in zip(tokens, bounds[1:], strict=True):
            quoted = text[start] in "'\"" or text[start : start + 3].upper().startswith(_LITERAL_PREFIXES)
            gaps.append(
                text[_literal_end(parser, text, start) : following] if quoted else text[start:following]
            )
    finally:
        parser.close()
    return any("--" in gap or "/*" in gap for gap in gaps)


_LITERAL_PREFIXES = ("E'", "X'", "B'", "N'", "U&'", 'U&"')
_MAX_LITERAL_TRIES = 64


def _literal_end(parser: duckdb.DuckDBPyConnection, text: str, start: int) -> int:
    """Where the quoted literal (string or identifier) starting at ``start`` ends.

    That is the first closing-quote candidate after which the text so far parses as a complete literal
    and no second quote follows (a doubled quote continues the literal): the lexer reads the same
    characters the same way, so it ends the literal there too.
    """
    opening = min(i for i in (text.find("'", start), text.find('"', start)) if i >= 0)
    quote = text[opening]
    candidate = opening + 1
    for _ in range(_MAX_LITERAL_TRIES):  # bounded work: past it the rest counts as literal (no hint)
        found = text.find(quote, candidate)
        if found < 0:
            break
        candidate = found + 1
        if text[candidate : candidate + 1] != quote and _parses(parser, text[start:candidate]):
            return candidate
    return len(text)


def _parses(parser: duckdb.DuckDBPyConnection, literal: str) -> bool:
    row = parser.execute("SELECT json_serialize_sql(?)", [f"SELECT {literal}"]).fetchone()
    return not json.loads(row[0]).get("error")
