"""Extraction: a dataset's items -> shards of rows, on threads, processes or Dask."""
