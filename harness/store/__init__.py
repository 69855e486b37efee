"""Run records: the typed record, its schema version and migration, reading and writing."""
