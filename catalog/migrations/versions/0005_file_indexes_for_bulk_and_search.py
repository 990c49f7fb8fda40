"""file indexes for bulk loads and searches

Replaces the global ``files.sha256`` index (random-key writes made bulk loads ~3x slower)
with ``(project_id, sha256)``, and the single-column ``project_id`` / ``session_id`` indexes
with ``(project_id, type)`` / ``(session_id, type)``, which still serve lookups by ancestor.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 02:15:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_files_project_sha256", "files", ["project_id", "sha256"], unique=False)
    op.create_index("ix_files_project_type", "files", ["project_id", "type"], unique=False)
    op.create_index("ix_files_session_type", "files", ["session_id", "type"], unique=False)
    op.drop_index("ix_files_sha256", table_name="files")
    op.drop_index("ix_files_project_id", table_name="files")
    op.drop_index("ix_files_session_id", table_name="files")


def downgrade() -> None:
    op.create_index("ix_files_session_id", "files", ["session_id"], unique=False)
    op.create_index("ix_files_project_id", "files", ["project_id"], unique=False)
    op.create_index("ix_files_sha256", "files", ["sha256"], unique=False)
    op.drop_index("ix_files_session_type", table_name="files")
    op.drop_index("ix_files_project_type", table_name="files")
    op.drop_index("ix_files_project_sha256", table_name="files")
