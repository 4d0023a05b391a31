"""Data in: read tables, validate them, split them and report on them."""
from nlpforge.data.readers import read_table
from nlpforge.data.labelled import LabelledData, load_labelled

__all__ = ["read_table", "LabelledData", "load_labelled"]
