"""MongoDB source: documents and change streams mapped to rows (see docs/mongodb-mapping.md)."""
