"""Uploaded import files: spooled to a temporary file, stored in the database, read back.

A request spools the upload to a local temporary file first (reading a slow client while a
transaction holds SQLite's write lock would stop every writer), checking the size limit and
taking the SHA-256 on the way. The file then goes into ``import_upload_chunks`` in pieces of
``CHUNK_BYTES``, in the transaction that queues its job, and a worker on any host rebuilds it
from there. Memory stays at one chunk either way.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sqlalchemy import delete, exists, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from tally.errors import DomainError, TooLarge
from tally.imports.orm import ImportUploadChunk

CHUNK_BYTES = 1 << 20
"""Bytes per stored piece of an upload (the last one is shorter)."""


class UploadMissing(DomainError, status_code=409, title="Upload missing"):
    """A job's stored upload is gone or does not match the job's checksum."""


@dataclass(frozen=True)
class SpooledUpload:
    """An upload on local disk (the caller deletes it), its SHA-256 (hex) and its size."""

    path: Path
    checksum: str
    size: int


def spool(stream: IO[bytes], *, max_mb: int) -> SpooledUpload:
    """Copy an upload to a temporary file; ``TooLarge`` over ``max_mb`` (nothing is left)."""
    handle, name = tempfile.mkstemp(prefix="tally-upload-", suffix=".csv")
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(handle, "wb") as out:
            while chunk := stream.read(CHUNK_BYTES):
                size += len(chunk)
                if size > max_mb * 1024 * 1024:
                    raise TooLarge(
                        f"the file is larger than {max_mb} MB (TALLY_IMPORT_MAX_UPLOAD_MB); "
                        "split it, or import it with the CLI (`tally import`)"
                    )
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return SpooledUpload(Path(name), digest.hexdigest(), size)


def store(session: Session, *, merchant_id: int, job_id: int, path: Path) -> int:
    """Store the file at ``path`` as the job's upload (replacing any); how many chunks."""
    discard(session, job_id=job_id)
    position = 0
    with open(path, "rb") as stream:
        # One insert per chunk: a statement holds one chunk in memory, not the whole file.
        while data := stream.read(CHUNK_BYTES):
            session.execute(
                insert(ImportUploadChunk).values(
                    merchant_id=merchant_id, job_id=job_id, position=position, data=data
                )
            )
            position += 1
    return position


def move(session: Session, *, from_job: int, to_job: int) -> None:
    """Give one job's stored upload to another (a preview's file to the job that runs it)."""
    if from_job == to_job:
        return
    discard(session, job_id=to_job)
    session.execute(
        update(ImportUploadChunk)
        .where(ImportUploadChunk.job_id == from_job)
        .values(job_id=to_job)
        .execution_options(synchronize_session=False)
    )


def has_upload(session: Session, *, job_id: int) -> bool:
    """Whether the job has a stored upload."""
    return bool(session.scalar(select(exists().where(ImportUploadChunk.job_id == job_id))))


def discard(session: Session, *, job_id: int) -> None:
    """Delete the job's stored upload."""
    session.execute(
        delete(ImportUploadChunk)
        .where(ImportUploadChunk.job_id == job_id)
        .execution_options(synchronize_session=False)
    )


@contextmanager
def restored(factory: sessionmaker[Session], *, job_id: int, checksum: str) -> Iterator[Path]:
    """The job's stored upload as a temporary file, deleted afterwards.

    Each chunk is read in a short transaction of its own, so a long file holds no snapshot
    open. ``UploadMissing`` when there is none, or it is not the file the job names.
    """
    handle, name = tempfile.mkstemp(prefix="tally-import-", suffix=".csv")
    path = Path(name)
    try:
        digest = hashlib.sha256()
        position = 0
        with os.fdopen(handle, "wb") as out:
            while True:
                with factory() as session:
                    data = session.scalar(
                        select(ImportUploadChunk.data).where(
                            ImportUploadChunk.job_id == job_id,
                            ImportUploadChunk.position == position,
                        )
                    )
                if data is None:
                    break
                digest.update(data)
                out.write(data)
                position += 1
        if position == 0 or digest.hexdigest() != checksum:
            raise UploadMissing(
                f"the uploaded file of import {job_id} is no longer stored (or is not the file "
                "the import was started with); upload it again to finish the import"
            )
        yield path
    finally:
        path.unlink(missing_ok=True)
