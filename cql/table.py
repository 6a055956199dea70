"""One definition of each table: its CQL file, and a row Struct whose fields
are the table's columns in order. `Table` derives every statement's column
list from that Struct, so the Python side never spells the schema twice; a
test compares each Struct with the live schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import msgspec

R = TypeVar("R", bound=msgspec.Struct)


class Table(Generic[R]):
    def __init__(
        self,
        name: str,
        row: type[R],
        partition_key: Sequence[str],
        clustering: Sequence[str] = (),
        written_later: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.row = row
        self.columns: tuple[str, ...] = row.__struct_fields__
        # An insert writes every column but these, which only later UPDATEs
        # set: an insert repeated after them must not null them.
        self.inserted = tuple(c for c in self.columns if c not in written_later)
        self.partition_key = tuple(partition_key)
        self.clustering = tuple(clustering)
        unknown = set(self.partition_key + self.clustering) - set(self.columns)
        if unknown:
            raise ValueError(f"{name}: key columns {sorted(unknown)} are not fields of {row}")

    @property
    def primary_key(self) -> tuple[str, ...]:
        return self.partition_key + self.clustering

    def insert(
        self,
        *,
        if_not_exists: bool = False,
        columns: Iterable[str] | None = None,
        ttl_s: int | None = None,
    ) -> str:
        """`ttl_s` overrides the table's default_time_to_live for the cells written."""
        cols = tuple(columns) if columns is not None else self.inserted
        marks = ", ".join("?" for _ in cols)
        cql = f"INSERT INTO {self.name} ({', '.join(cols)}) VALUES ({marks})"
        return cql + (" IF NOT EXISTS" if if_not_exists else "") + _using_ttl(ttl_s)

    def select(self, where: str | None = None, *, columns: Iterable[str] | None = None) -> str:
        """SELECT the row's columns (all, in field order, unless named) from
        one partition: `where` defaults to equality on the partition key."""
        cols = ", ".join(columns) if columns is not None else ", ".join(self.columns)
        return f"SELECT {cols} FROM {self.name} WHERE {where or self.key_where()}"

    def update(
        self,
        assignments: Iterable[str],
        *,
        condition: str | None = None,
        ttl_s: int | None = None,
    ) -> str:
        sets = ", ".join(f"{c} = ?" for c in assignments)
        where = self.key_where(self.primary_key)
        cql = f"UPDATE {self.name}{_using_ttl(ttl_s)} SET {sets} WHERE {where}"
        return cql + (f" IF {condition}" if condition else "")

    def delete(self, key: Sequence[str] | None = None) -> str:
        """DELETE a partition (or, given `key` columns, what they select)."""
        return f"DELETE FROM {self.name} WHERE {self.key_where(key)}"

    def key_where(self, key: Sequence[str] | None = None) -> str:
        return " AND ".join(f"{c} = ?" for c in (key or self.partition_key))

    def values(self, row: R) -> tuple[Any, ...]:
        """The row's values for insert()."""
        if self.inserted == self.columns:
            return msgspec.structs.astuple(row)
        return tuple(getattr(row, c) for c in self.inserted)

    def from_row(self, values: Sequence[Any]) -> R:
        return self.row(*values)

    def from_mapping(self, values: Mapping[str, Any]) -> R:
        return self.row(**{c: values[c] for c in self.columns})


def _using_ttl(ttl_s: int | None) -> str:
    # Part of the statement's text, prepared once; int() lets only a number in.
    return "" if ttl_s is None else f" USING TTL {int(ttl_s)}"
