"""Persistence: SQL rows (SQLAlchemy, migrated by Alembic) and audio blobs (files)."""

from parla.store.blobs import BlobWriter, LocalBlobStore
from parla.store.db import Database
from parla.store.models import Base, Generation, Voice, VoiceSample

__all__ = ["Base", "BlobWriter", "Database", "Generation", "LocalBlobStore", "Voice", "VoiceSample"]
