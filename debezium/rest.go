package debezium

import (
	"fmt"
	"strings"
)

// irrelevant are connector options that do not change what an outbox publishes, with
// the reason; a name ending in "." covers every option under it.
var irrelevant = map[string]string{
	"name":                                   "Kafka Connect bookkeeping",
	"tasks.max":                              "Kafka Connect bookkeeping (a PostgreSQL connector runs one task)",
	"tombstones.on.delete":                   "the EventRouter drops deletes, and pgoutbox's publication publishes inserts only",
	"skipped.operations":                     "pgoutbox publishes inserts only",
	"replica.identity.autoset.values":        "pgoutbox publishes inserts only, which need no replica identity",
	"skip.messages.without.change":           "pgoutbox publishes inserts only",
	"schema.include.list":                    "table.include.list names the outbox tables",
	"schema.whitelist":                       "table.include.list names the outbox tables",
	"message.key.columns":                    "the EventRouter replaces the key with table.field.event.key",
	"snapshot.":                              "pgoutbox streams from the slot; --backfill publishes the rows already in the table when pgoutbox creates the slot",
	"incremental.snapshot.":                  "pgoutbox streams from the slot; see --backfill",
	"signal.":                                "Debezium signals do not apply to pgoutbox",
	"notification.":                          "Debezium notifications do not apply to pgoutbox",
	"heartbeat.":                             "pgoutbox confirms the WAL position of an idle outbox itself (no heartbeat table or topic is needed)",
	"topic.creation.":                        "pgoutbox creates no topics; the topics Debezium created stay as they are",
	"include.schema.changes":                 "the PostgreSQL connector emits no schema change events",
	"include.schema.comments":                "pgoutbox writes no schema comments, and the EventRouter keeps none",
	"schema.history.internal.":               "the PostgreSQL connector keeps no schema history",
	"message.prefix.include.list":            "logical decoding messages are published with --messages-prefix",
	"message.prefix.exclude.list":            "logical decoding messages are published with --messages-prefix",
	"poll.interval.ms":                       "Debezium tuning without a pgoutbox counterpart",
	"max.batch.size":                         "Debezium tuning without a pgoutbox counterpart (see --max-in-flight)",
	"max.queue.size":                         "Debezium tuning without a pgoutbox counterpart (see --max-in-flight)",
	"max.queue.size.in.bytes":                "Debezium tuning without a pgoutbox counterpart (see --max-in-flight)",
	"query.fetch.size":                       "Debezium tuning without a pgoutbox counterpart",
	"retriable.restart.connector.wait.ms":    "pgoutbox reconnects with its own backoff",
	"connection.validation.timeout.ms":       "Debezium tuning without a pgoutbox counterpart",
	"executor.shutdown.timeout.ms":           "see --shutdown-timeout",
	"slot.max.retries":                       "pgoutbox retries a busy slot every --standby-retry",
	"slot.retry.delay.ms":                    "pgoutbox retries a busy slot every --standby-retry",
	"xmin.fetch.interval.ms":                 "pgoutbox does not track xmin",
	"schema.refresh.mode":                    "pgoutbox rebinds on every Relation message",
	"streaming.delay.ms":                     "pgoutbox streams at once",
	"create.slot.command.timeout":            "Debezium tuning without a pgoutbox counterpart",
	"custom.metric.tags":                     "pgoutbox has its own metrics (--metrics-addr)",
	"advanced.metrics.enable":                "pgoutbox has its own metrics (--metrics-addr)",
	"statistics.metrics.enabled":             "pgoutbox has its own metrics (--metrics-addr)",
	"money.fraction.digits":                  "applies to money columns, which an outbox does not publish",
	"hstore.handling.mode":                   "applies to hstore columns, which an outbox does not publish",
	"interval.handling.mode":                 "applies to interval columns, which an outbox does not publish",
	"unavailable.value.placeholder":          "applies to unchanged TOAST values of updates; pgoutbox publishes inserts only",
	"table.ignore.builtin":                   "pgoutbox reads only the outbox tables",
	"errors.retry.timeout":                   "Kafka Connect error handling; pgoutbox retries Kafka without end",
	"errors.retry.delay.max.ms":              "Kafka Connect error handling; pgoutbox retries Kafka without end",
	"errors.log.enable":                      "Kafka Connect error logging; pgoutbox logs every refused row",
	"errors.log.include.messages":            "Kafka Connect error logging; pgoutbox logs every refused row",
	"sourceinfo.struct.maker":                "the EventRouter drops the source block",
	"offset.mismatch.strategy":               "pgoutbox keeps its own checkpoint (see Gaps)",
	"slot.seek.to.known.offset.on.start":     "pgoutbox starts from the greater of its checkpoint and the slot's confirmed position",
	"guardrail.collections.max":              "pgoutbox reads only the outbox tables",
	"guardrail.collections.limit.action":     "pgoutbox reads only the outbox tables",
	"legacy.snapshot.max.threads":            "pgoutbox streams from the slot; see --backfill",
	"queue.provider.type":                    "Debezium internals",
	"transaction.metadata.factory":           "Debezium internals",
	"log.position.check.enable":              "Debezium internals",
	"event.converting.failure.handling.mode": "applies to column types an outbox does not publish",
	"custom.retriable.exception":             "Debezium internals",
	"lsn.flush.timeout.ms":                   "pgoutbox confirms after Kafka acknowledged and the checkpoint is saved",
	"lsn.flush.timeout.action":               "pgoutbox confirms after Kafka acknowledged and the checkpoint is saved",
	"database.query.timeout.ms":              "Debezium tuning without a pgoutbox counterpart",
	"database.tcpKeepAlive":                  "pgoutbox's connections use TCP keepalives",
}

// defaultOnly are options pgoutbox honours only at Debezium's default value, because
// another value changes the bytes or the delivery in a way pgoutbox does not reproduce.
var defaultOnly = map[string][]string{
	"decimal.handling.mode":                  {"precise"},
	"binary.handling.mode":                   {"bytes"},
	"time.precision.mode":                    {"adaptive", "adaptive_time_microseconds"},
	"schema.name.adjustment.mode":            {"none"},
	"field.name.adjustment.mode":             {"none"},
	"topic.delimiter":                        {"."},
	"topic.naming.strategy":                  {"io.debezium.schema.SchemaTopicNamingStrategy", "io.debezium.schema.DefaultTopicNamingStrategy"},
	"include.unknown.datatypes":              {"false"},
	"publish.via.partition.root":             {"false"},
	"slot.drop.on.stop":                      {"false"},
	"slot.stream.params":                     {""},
	"provide.transaction.metadata":           {"false"},
	"lsn.flush.mode":                         {"connector"},
	"flush.lsn.source":                       {"true"},
	"read.only":                              {"false"},
	"event.processing.failure.handling.mode": {"fail"},
	"errors.tolerance":                       {"none"},
	"converters":                             {""},
	"post.processors":                        {""},
	"column.propagate.source.type":           {""},
	"datatype.propagate.source.type":         {""},
	"column.include.list":                    {""},
	"column.exclude.list":                    {""},
	"column.whitelist":                       {""},
	"column.blacklist":                       {""},
	"table.exclude.list":                     {""},
	"table.blacklist":                        {""},
	"database.sslfactory":                    {"", "org.postgresql.ssl.LibPQFactory"},
	"database.initial.statements":            {""},
}

// rest classifies every option not consumed yet: irrelevant ones are listed, the
// default-only ones checked, and every other one refused by name.
func (c *converter) rest() {
	for _, k := range c.o.sortedKeys() {
		if c.used[k] {
			continue
		}
		v := strings.TrimSpace(c.o.Values[k])
		if reason, ok := irrelevantReason(k); ok {
			c.ignore(k, reason)
			continue
		}
		if allowed, ok := defaultOnly[k]; ok {
			good := false
			for _, a := range allowed {
				good = good || strings.EqualFold(v, a)
			}
			if good {
				c.ignore(k, "Debezium's default, which is what pgoutbox does")
			} else {
				c.refuse(k, fmt.Sprintf("%q changes what Debezium writes in a way pgoutbox does not reproduce (only %q is honoured)", v, allowed[0]))
			}
			continue
		}
		switch {
		case strings.HasPrefix(k, "column.mask.") || strings.HasPrefix(k, "column.truncate.to."):
			c.refuse(k, "pgoutbox does not mask or truncate columns")
		case strings.HasPrefix(k, "database."):
			c.refuse(k, "a database option pgoutbox does not know; put connection settings in --postgres-url")
		case strings.HasPrefix(k, "producer.") || strings.HasPrefix(k, "consumer.") || strings.HasPrefix(k, "admin."):
			c.refuse(k, "only producer.override.* maps to librdkafka")
		default:
			c.refuse(k, "an option pgoutbox does not know; remove it if it does not matter for the outbox")
		}
	}
}

func irrelevantReason(k string) (string, bool) {
	if r, ok := irrelevant[k]; ok && !strings.HasSuffix(k, ".") {
		return r, true
	}
	for prefix, r := range irrelevant {
		if strings.HasSuffix(prefix, ".") && strings.HasPrefix(k, prefix) {
			return r, true
		}
	}
	return "", false
}
