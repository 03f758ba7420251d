"""Each reference API as a thin dialect over the same services (docs/architecture.md, "Dialects")."""
