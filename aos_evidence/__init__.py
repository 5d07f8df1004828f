"""The evidence read model, below the services: the queries more than one service
reads (queries) and the one place rows become protos with their EvidenceMetadata
(messages). Services import it; it imports nothing of services/."""
