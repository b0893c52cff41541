"""Applying claimed inbound events to stock: `plan` (parse and resolve, pure reads) and `apply`
(lock in the global order, settle order holds, write through the inventory services)."""

from ingestion.processing.apply import BatchProcessor
from ingestion.processing.plan import EventResult, Permanent, Transient

__all__ = ["BatchProcessor", "EventResult", "Permanent", "Transient"]
