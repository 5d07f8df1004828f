"""ExportVerified: a VerifyExport's result, recorded once in the audit ledger.

Revision ID: 0014_export_verified
Revises: 0013_transparency_log
Create Date: 2026-12-06

Why (issue #19): VerifyExport re-renders the whole export (11.8 s at 200,000 records)
for every caller. Its result is itself evidence: the service appends it to the tenant's
audit ledger (event_type ExportVerified, entity LOG_EXPORT, the verdict, the verifier's
version and each check with what it compared in after_state) and answers later calls
for the same export from that entry. The ledger's event_type CHECK (0001, carried onto
every partition by 0008) lists the closed vocabulary of the contract
(aos.evidence.v1.AuditEventType), so the new value needs this migration: the CHECK is
replaced on the partitioned ledger by one that also admits ExportVerified. Adding it
validates every partition once (a scan of the ledger, at migration time).

Downgrade restores 0001's list. The ledger is append-only: once an ExportVerified entry
is recorded, the database refuses the narrower CHECK and the downgrade fails, as it must.
"""
from alembic import op

revision = "0014_export_verified"
down_revision = "0013_transparency_log"
branch_labels = None
depends_on = None

# A frozen copy (migrations never import the code they migrate for): 0001's list, then ours.
AUDIT_EVENTS = (
    # V1 (PIN-413)
    "PolicyRuleCreated", "PolicyRuleModified", "PolicyRuleRetired",
    "PolicyProposalApproved", "PolicyProposalRejected",
    "LimitCreated", "LimitUpdated", "LimitBreached", "LimitOverrideGranted", "LimitOverrideRevoked",
    "IncidentAcknowledged", "IncidentResolved", "IncidentManuallyClosed",
    "EmergencyOverrideActivated", "EmergencyOverrideDeactivated",
    # V2 O1-O3 panels
    "ActorLoggedIn", "ActorLoggedOut", "ApiKeyCreated", "ApiKeyRevoked",
    "AccessGranted", "AccessDenied", "EvidenceExported",
    # issue #19
    "ExportVerified",
)
PREVIOUS = AUDIT_EVENTS[:-1]


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def _replace_event_check(events: tuple[str, ...]) -> None:
    conn = op.get_bind()
    # The ledger's own event_type CHECK and any copy a partition holds locally (one attached
    # with its constraints); an inherited copy goes with the parent's.
    for relation, name in conn.exec_driver_sql(
            "SELECT c.conrelid::regclass::text, c.conname FROM pg_constraint c "
            "WHERE c.contype = 'c' AND c.conislocal "
            "AND c.conrelid IN (SELECT relid FROM pg_partition_tree('audit_ledger'::regclass)) "
            "AND pg_get_constraintdef(c.oid) LIKE '%%EvidenceExported%%' "
            "ORDER BY c.conrelid = 'audit_ledger'::regclass DESC").fetchall():
        conn.exec_driver_sql(f'ALTER TABLE {relation} DROP CONSTRAINT IF EXISTS "{name}"')
    conn.exec_driver_sql("ALTER TABLE audit_ledger ADD CONSTRAINT audit_ledger_event_type_check "
                         f"CHECK (event_type IN {_in(events)})")


def upgrade() -> None:
    _replace_event_check(AUDIT_EVENTS)


def downgrade() -> None:
    _replace_event_check(PREVIOUS)
