#!/bin/sh
# Docker entrypoint init script for the postgres image: let the pgoutbox role open
# replication connections from other containers. pg_hba.conf's "all" database does
# not cover replication connections; they need the "replication" keyword.
set -e
echo "host replication pgoutbox all scram-sha-256" >> "$PGDATA/pg_hba.conf"
