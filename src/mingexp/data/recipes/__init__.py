"""Converters from the public datasets' published formats into mingexp's shard layouts (see data_recipes/)."""
