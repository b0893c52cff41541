"""Vacuum the inbound event table by row count, not by its size.

Every applied event updates its row's status, leaving a dead row version and dead entries in the
partial `pending` indexes the drain's claim walks. PostgreSQL's default waits for 20 % of the table
to be dead before vacuuming: on a table of 2.5 million events that was 1.5 million dead rows, and
the claim of an empty queue read 10,000 pages (104 ms) instead of one (0.03 ms after a VACUUM),
which took 2,900 events/s from keeping up (p99 150 ms) to falling behind (p99 1.6-4.4 s;
docs/ingestion.md, "Queue table upkeep"). Vacuum (and analyze) after 20,000 changed rows whatever
the table's size; PostgreSQL's cost-based pacing stays, so a vacuum does not take the cores from
the drain.
"""

from django.db import migrations

SETTINGS = ("autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000, "
            "autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 20000")
RESET = ("autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, autovacuum_analyze_scale_factor, "
         "autovacuum_analyze_threshold")


class Migration(migrations.Migration):
    dependencies = [("ingestion", "0004_inbound_partition")]

    operations = [
        migrations.RunSQL(f"ALTER TABLE ingestion_inboundevent SET ({SETTINGS})",
                          f"ALTER TABLE ingestion_inboundevent RESET ({RESET})"),
    ]
