"""Each seed's API as a thin dialect over the same services (DESIGN, "Compatibility surfaces")."""
