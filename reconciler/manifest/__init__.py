"""Manifests: load (YAML with locations), validate (schemas and semantic rules), model."""
