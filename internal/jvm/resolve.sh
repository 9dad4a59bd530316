#!/usr/bin/env bash
# resolve.sh prints the directory that holds the jars of the JVM programs the tests run
# as references (kafka/: the Apache Kafka broker; connect/: Kafka Connect with Debezium's
# PostgreSQL connector), copying them from Maven Central on the first run.
#
# The directory is named after a hash of the poms, under $PGOUTBOX_JVM_CACHE (default
# ~/.cache/pgoutbox-jvm), so a changed pom resolves anew and a warm one returns at once.
# Maven's own ~/.m2 keeps downloads across hashes. Maven's output goes to stderr; stdout
# is only the directory.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${PGOUTBOX_JVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pgoutbox-jvm}"
hash="$(cat "$here/pom.xml" "$here/kafka/pom.xml" "$here/connect/pom.xml" | sha256sum | cut -c1-16)"
dir="$cache/$hash"
if [ -f "$dir/complete" ]; then
  echo "$dir"
  exit 0
fi
mkdir -p "$cache"
# Test packages run in parallel and may all resolve at once: one at a time.
exec 9>"$cache/lock"
flock 9
if [ -f "$dir/complete" ]; then
  echo "$dir"
  exit 0
fi
if ! command -v mvn >/dev/null 2>&1; then
  echo "resolve.sh: mvn not found; install Maven (Debian: apt-get install maven)" >&2
  exit 1
fi
rm -rf "$dir.tmp"
echo "resolve.sh: resolving Kafka and Debezium jars into $dir" >&2
mvn -B -q -f "$here/pom.xml" -Djvm.out="$dir.tmp" package >&2
rm -rf "$dir.tmp/build"
touch "$dir.tmp/complete"
rm -rf "$dir"
mv "$dir.tmp" "$dir"
echo "$dir"
