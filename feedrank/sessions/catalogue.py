"""The shop's catalogue: every page a session can show, and which of them are items.

The session recommender's one id space is the catalogue (``items.parquet`` of the log,
one row per page): the model reads pages from it and predicts from it, both the next
page and the next add-to-cart, so an item's page and the item share one embedding
(the DRNN's input and output embeddings are tied).  A page's type is the table's
``page_type`` column (``index``, ``category`` or ``item``) when it has one; otherwise
the simulator's id prefix (``x``/``c``/``i``, `feedrank.sessions.features.page_type`),
and ``item`` for any other id, so a log with plain numeric ids is a catalogue of items.

Ids: the Transform numbers the catalogue 1..N (`vocabulary_ids`), 0 is padding and
N + 1 the out-of-vocabulary id of a page or item missing from the catalogue; only item
pages can be predicted as an add-to-cart (`is_item`).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Container, Dict, List, Mapping, Sequence, Tuple

import numpy as np

log = logging.getLogger(__name__)

PAGE_TYPE_COLUMN = "page_type"
ITEM = "item"


class CatalogueError(ValueError):
    """The log's items table cannot serve as the session catalogue (one line naming why)."""


@dataclasses.dataclass(frozen=True)
class Catalogue:
    """The catalogue's page ids and their types, in the table's order."""

    page_ids: Tuple[str, ...]
    page_types: Tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.page_ids) != len(self.page_types):
            raise CatalogueError("the catalogue needs one page type per page id")
        if not self.page_ids:
            raise CatalogueError("the catalogue (items table) has no rows")
        if ITEM not in self.page_types:
            raise CatalogueError("the catalogue has no item page (page_type 'item'): nothing can be carted")

    @property
    def types(self) -> Dict[str, str]:
        """page id -> page type."""
        return dict(zip(self.page_ids, self.page_types))

    @property
    def item_ids(self) -> List[str]:
        """The item pages' ids, in the table's order."""
        return [p for p, t in zip(self.page_ids, self.page_types) if t == ITEM]


def from_frame(items: "object") -> Catalogue:
    """A catalogue from an items frame (``item_id`` and, optionally, ``page_type``); an id
    listed twice keeps its first row."""
    from feedrank.sessions.features import PAGE_TYPES, page_type

    df = items.drop_duplicates("item_id", keep="first")
    ids = [str(v) for v in df["item_id"]]
    if PAGE_TYPE_COLUMN in df.columns:
        types = ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in df[PAGE_TYPE_COLUMN]]
        bad = sorted({t for t in types if t not in PAGE_TYPES})
        if bad:
            raise CatalogueError(f"items table: page_type must be one of {list(PAGE_TYPES)}, got {bad[:5]}")
    else:
        types = [page_type(i) or ITEM for i in ids]
    return Catalogue(tuple(ids), tuple(types))


def load(input_base: str) -> Catalogue:
    """The catalogue of the log under ``input_base`` (its items table, with ``page_type`` if present)."""
    from feedrank.events import contract, io

    try:
        files = io.check_table(input_base, contract.ITEMS)
    except (io.ContractError, FileNotFoundError, ValueError) as e:
        raise CatalogueError(f"the session recommender needs the log's items table (items.parquet: "
                             f"item_id, page_type) under {input_base}: {e}") from None
    df = io.read_table(input_base, contract.ITEMS, extra=(PAGE_TYPE_COLUMN,) if _has_type(files) else ())
    cat = from_frame(df)
    log.info("catalogue: %d pages, %d items", len(cat.page_ids), len(cat.item_ids))
    return cat


def _has_type(files: Sequence[object]) -> bool:
    from feedrank.events import io

    return any(PAGE_TYPE_COLUMN in io.file_columns(f) for f in files)


def vocabulary_ids(pages: Sequence[str]) -> Dict[str, int]:
    """A vocabulary (ids in the Transform's order) -> {page id: model id}, 1-based."""
    return {p: i + 1 for i, p in enumerate(pages)}


def item_flags(vocabulary: Sequence[str], items: Container[str]) -> List[bool]:
    """[N + 2] flags over model ids (0 padding, 1..N the vocabulary, N + 1 out of vocabulary):
    True where the id's page is in ``items``."""
    return [False] + [p in items for p in vocabulary] + [False]


def is_item(vocabulary: Sequence[str], types: Mapping[str, str]) -> np.ndarray:
    """`item_flags` of the vocabulary's pages whose type is ``item`` (a page without a type is one)."""
    return np.asarray(item_flags(vocabulary, {p for p in vocabulary if types.get(p, ITEM) == ITEM}))
