"""The session catalogue: page types from the items table's column, else the id scheme, else
item; the model ids with padding and out of vocabulary; clear errors."""
import numpy as np
import pandas as pd
import pytest

from feedrank.sessions import catalogue as C


def test_page_types_come_from_the_column_when_there_is_one():
    cat = C.from_frame(pd.DataFrame({"item_id": ["x0", "c1", "7", "7", "i2"],
                                     "page_type": ["index", "category", "item", "category", "item"]}))
    assert cat.page_ids == ("x0", "c1", "7", "i2")                     # a repeated id keeps its first row
    assert cat.types == {"x0": "index", "c1": "category", "7": "item", "i2": "item"}
    assert cat.item_ids == ["7", "i2"]


def test_without_the_column_the_id_scheme_then_item():
    cat = C.from_frame(pd.DataFrame({"item_id": ["x0", "c1", "i2", "242"]}))
    assert cat.page_types == ("index", "category", "item", "item")     # a plain numeric id is an item


def test_model_ids_and_the_item_mask():
    cat = C.from_frame(pd.DataFrame({"item_id": ["x0", "c1", "i2"]}))
    assert C.vocabulary_ids(cat.page_ids) == {"x0": 1, "c1": 2, "i2": 3}
    np.testing.assert_array_equal(C.is_item(cat.page_ids, cat.types), [False, False, False, True, False])


def test_bad_catalogues_are_one_line_errors(tmp_path):
    with pytest.raises(C.CatalogueError,
                       match=r"page_type must be one of \['index', 'category', 'item'\], got \['shelf'\]"):
        C.from_frame(pd.DataFrame({"item_id": ["a"], "page_type": ["shelf"]}))
    with pytest.raises(C.CatalogueError, match="no item page"):
        C.from_frame(pd.DataFrame({"item_id": ["x0", "c1"]}))
    with pytest.raises(C.CatalogueError, match="needs the log's items table"):
        C.load(str(tmp_path))


def test_load_reads_the_items_table(tmp_path):
    pd.DataFrame({"item_id": ["x0", "i1"], "category_id": "", "region_id": "",
                  "page_type": ["index", "item"]}).to_parquet(tmp_path / "items.parquet")
    assert C.load(str(tmp_path)).types == {"x0": "index", "i1": "item"}
