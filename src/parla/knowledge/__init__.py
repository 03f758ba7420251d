"""Knowledge for characters: documents split into passages, embedded, stored and searched."""
