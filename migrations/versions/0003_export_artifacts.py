"""Export artifacts: the bytes of every export, stored with its log_exports row.

Revision ID: 0003_export_artifacts
Revises: 0002_overview_indexes
Create Date: 2026-11-25

An artifact is written in the same transaction as its log_exports row, as 1 MiB
chunks (DownloadExport streams them in order, so memory does not grow with size).
The foreign key is deferred to commit: chunks are written while the artifact is
rendered, and the row — which carries the artifact's checksum and signed manifest —
last. Either both commit or neither exists. Append-only like log_exports, under
the same row-level security, readable and insertable by the export role only.
"""
from alembic import op

revision = "0003_export_artifacts"
down_revision = "0002_overview_indexes"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE log_export_artifacts (
    export_id  text    NOT NULL REFERENCES log_exports(id) DEFERRABLE INITIALLY DEFERRED,
    tenant_id  text    NOT NULL REFERENCES tenants(id),
    chunk_no   integer NOT NULL CHECK (chunk_no >= 0),
    data       bytea   NOT NULL CHECK (octet_length(data) BETWEEN 1 AND 1048576),
    PRIMARY KEY (export_id, chunk_no)
);
ALTER TABLE log_export_artifacts OWNER TO aos_owner;
CREATE TRIGGER log_export_artifacts_append_only BEFORE UPDATE OR DELETE ON log_export_artifacts
    FOR EACH ROW EXECUTE FUNCTION aos_refuse_mutation();
CREATE TRIGGER log_export_artifacts_no_truncate BEFORE TRUNCATE ON log_export_artifacts
    FOR EACH STATEMENT EXECUTE FUNCTION aos_refuse_mutation();
ALTER TABLE log_export_artifacts ENABLE ALWAYS TRIGGER log_export_artifacts_append_only;
ALTER TABLE log_export_artifacts ENABLE ALWAYS TRIGGER log_export_artifacts_no_truncate;
ALTER TABLE log_export_artifacts ENABLE ROW LEVEL SECURITY;
CREATE POLICY log_export_artifacts_tenant ON log_export_artifacts
    USING (tenant_id = aos_current_tenant()) WITH CHECK (tenant_id = aos_current_tenant());
GRANT SELECT, INSERT ON log_export_artifacts TO aos_export;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("DROP TABLE log_export_artifacts")
