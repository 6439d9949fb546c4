"""Config: the YAML file's typed shape (schema.py), its loader (load.py) and the sample
`generate` writes (sample.py). Import from those modules: this package imports nothing, so
that the schema stays on the bottom floor and the loader may build on the floors above it."""
