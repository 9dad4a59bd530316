package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/pgoutbox/pgoutbox/debezium"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/relay"
	"github.com/pgoutbox/pgoutbox/sink"
)

// errHelp is returned after --help printed the usage: exit 0.
var errHelp = errors.New("help requested")

// envPrefix: every flag --some-name can also be set as PGOUTBOX_SOME_NAME.
const envPrefix = "PGOUTBOX_"

// Flag groups, in --help order.
const (
	groupPostgres  = "PostgreSQL"
	groupKafka     = "Kafka"
	groupMapping   = "Mapping (defaults match Debezium's outbox EventRouter)"
	groupOps       = "Operations"
	groupRepublish = "Republish"
)

var groupOrder = []string{groupRepublish, groupPostgres, groupKafka, groupMapping, groupOps}

// flags is a flag.FlagSet whose flags belong to groups and fall back to environment
// variables.
type flags struct {
	fs       *flag.FlagSet
	groups   map[string]string // flag name -> group
	explicit map[string]bool   // flags given on the command line or in the environment
}

func newFlags(name string) *flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &flags{fs: fs, groups: map[string]string{}, explicit: map[string]bool{}}
}

func (f *flags) string(group, name, value, usage string) *string {
	f.groups[name] = group
	return f.fs.String(name, value, usage)
}

func (f *flags) bool(group, name string, value bool, usage string) *bool {
	f.groups[name] = group
	return f.fs.Bool(name, value, usage)
}

func (f *flags) int(group, name string, value int, usage string) *int {
	f.groups[name] = group
	return f.fs.Int(name, value, usage)
}

func (f *flags) duration(group, name string, value time.Duration, usage string) *time.Duration {
	f.groups[name] = group
	return f.fs.Duration(name, value, usage)
}

func (f *flags) list(group, name, usage string) *listFlag {
	f.groups[name] = group
	l := &listFlag{}
	f.fs.Var(l, name, usage)
	return l
}

// listFlag is a repeatable flag. From the environment, values are separated by
// newlines, or by commas when there is no newline. def is the default --help shows
// when none is given.
type listFlag struct {
	values []string
	def    string
}

func (l *listFlag) String() string { return strings.Join(l.values, ",") }
func (l *listFlag) Set(v string) error {
	l.values = append(l.values, v)
	return nil
}

// parse parses args, then fills every flag not given on the command line from its
// environment variable.
func (f *flags) parse(args []string, getenv func(string) string) error {
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return &usageError{err}
	}
	if f.fs.NArg() > 0 {
		return &usageError{fmt.Errorf("unexpected argument %q", f.fs.Arg(0))}
	}
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	var err error
	f.fs.VisitAll(func(fl *flag.Flag) {
		if set[fl.Name] || err != nil {
			f.explicit[fl.Name] = set[fl.Name]
			return
		}
		env := envName(fl.Name)
		v := getenv(env)
		if v == "" {
			return
		}
		f.explicit[fl.Name] = true
		values := []string{v}
		if _, ok := fl.Value.(*listFlag); ok {
			sep := ","
			if strings.Contains(v, "\n") {
				sep = "\n"
			}
			values = strings.Split(strings.TrimSpace(v), sep)
		}
		for _, one := range values {
			if one = strings.TrimSpace(one); one == "" {
				continue
			}
			if e := fl.Value.Set(one); e != nil {
				err = &usageError{fmt.Errorf("invalid value %q for %s: %v", v, env, e)}
				return
			}
		}
	})
	return err
}

func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// usage prints the grouped flag list.
func (f *flags) usage(w io.Writer, intro string) {
	fmt.Fprint(w, intro)
	byGroup := map[string][]*flag.Flag{}
	f.fs.VisitAll(func(fl *flag.Flag) { byGroup[f.groups[fl.Name]] = append(byGroup[f.groups[fl.Name]], fl) })
	for _, g := range groupOrder {
		fls := byGroup[g]
		if len(fls) == 0 {
			continue
		}
		sort.Slice(fls, func(i, j int) bool { return fls[i].Name < fls[j].Name })
		fmt.Fprintf(w, "\n%s:\n", g)
		for _, fl := range fls {
			name, usage := flag.UnquoteUsage(fl)
			head := "  --" + fl.Name
			if name != "" {
				head += " " + name
			}
			fmt.Fprintf(w, "%s\n", head)
			fmt.Fprintf(w, "        %s\n", strings.ReplaceAll(usage, "\n", "\n        "))
			def := fl.DefValue
			if l, ok := fl.Value.(*listFlag); ok {
				def = l.def
			}
			if def != "" && def != "false" && def != "0" && def != "0s" {
				fmt.Fprintf(w, "        default: %s\n", def)
			}
			fmt.Fprintf(w, "        env: %s\n", envName(fl.Name))
		}
	}
}

const relayIntro = `pgoutbox publishes a PostgreSQL transactional outbox table to Kafka through logical
replication: every committed insert becomes one Kafka record, in commit order per key,
and the replication slot is confirmed only after Kafka acknowledged the events.

Usage:
  pgoutbox [run] [flags]       stream the outbox to Kafka (the default)
  pgoutbox status [flags]      show the slot, publication and checkpoint; exit 1 if something needs attention
  pgoutbox republish [flags]   publish the outbox rows matching --where again (see pgoutbox republish --help)
  pgoutbox debezium-config FILE
                               print the flags equivalent to a Debezium connector configuration
  pgoutbox version             print the version

Every flag can also be set through the environment variable named below it; a flag on the
command line wins. Repeatable flags take several values from the environment separated by
newlines (or commas when there is no newline).
`

// backfillFlag is --backfill (every row) or --backfill=CONDITION.
type backfillFlag struct {
	set   bool
	where string
}

func (b *backfillFlag) String() string   { return b.where }
func (b *backfillFlag) IsBoolFlag() bool { return true }
func (b *backfillFlag) Set(v string) error {
	b.set = true
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "":
		b.where = ""
	case "false":
		b.set, b.where = false, ""
	default:
		b.where = v
	}
	return nil
}

// options are the parsed flags of the relay command.
type options struct {
	cfg       relay.Config
	logLevel  string
	logFormat string
	metrics   string
	debezium  *debezium.Result // the --debezium-config read, for logging; nil without one
}

// relayFlags defines the relay's flags; parse them with f.parse and then call build.
type relayFlags struct {
	*flags
	kafka                                            kafkaFlags
	mapping                                          mappingFlags
	log                                              logFlags
	postgresURL, slot, publication, debeziumConfig   *string
	onError, deadLetter                              *string
	checkpointStore, checkpointFile, checkpointTable *string
	metricsAddr                                      *string
	maxInFlight                                      *int
	statusInterval, shutdownTimeout, retryActive     *time.Duration
	acceptGap, slotFailover, exactlyOnce             *bool
	syncGuard                                        *string
	txnHeaders                                       *bool
	checkpointTopic, txnID                           *string
	txnInterval                                      *time.Duration
	txnMaxEvents                                     *int
	backfill                                         *backfillFlag
	backfillOrder                                    *string
	messagesPrefix                                   *string
}

func newRelayFlags() *relayFlags {
	f := &relayFlags{flags: newFlags("pgoutbox")}
	f.postgresURL = f.postgresURLFlag()
	f.kafka = f.kafkaFlags()
	f.mapping = f.mappingFlags()
	f.log = f.logFlags()
	f.slot = f.string(groupPostgres, "slot", "pgoutbox", "logical replication slot `name`; created with plugin pgoutput if missing")
	f.publication = f.string(groupPostgres, "publication", "pgoutbox", "publication `name`; created FOR TABLE <table> WITH (publish = 'insert') if missing")
	f.acceptGap = f.bool(groupPostgres, "accept-gap", false, "start even though the checkpoint and the slot disagree (slot dropped, re-created or lost);\nevents in the gap are not published. Use once, after reading the gap error")
	f.slotFailover = f.bool(groupPostgres, "slot-failover", false, "create the slot as a failover slot (PostgreSQL 17+) that standbys keep in sync")
	f.syncGuard = f.string(groupPostgres, "sync-guard", relay.SyncGuardAuto, "publish a transaction only once it is visible on the primary, i.e. its synchronous standbys\nconfirmed it (no phantom events after a failover): auto (when synchronous_standby_names is set), on or off")
	f.retryActive = f.duration(groupPostgres, "standby-retry", 5*time.Second, "how often a standby instance retries a slot that another instance streams from")

	f.onError = f.string(groupKafka, "on-error", relay.OnErrorFail, "what to do with a row Kafka refuses (too large, bad topic, not authorized):\nfail (stop; nothing past it is confirmed) or dead-letter")
	f.deadLetter = f.string(groupKafka, "dead-letter-topic", "outbox.dead-letter", "`topic` for rows refused by Kafka with --on-error=dead-letter")
	f.maxInFlight = f.int(groupKafka, "max-in-flight", 20000, "events published but not yet checkpointed before reading pauses; bounds memory and\nwhat a crash publishes twice (a transaction larger than this is replayed whole)")
	f.exactlyOnce = f.bool(groupKafka, "exactly-once", false, "publish with Kafka transactions that also carry the checkpoint: read_committed\nconsumers see every event exactly once across crashes")
	f.checkpointTopic = f.string(groupKafka, "checkpoint-topic", "pgoutbox.checkpoints", "compacted `topic` for the exactly-once checkpoint records (created if missing)")
	f.txnID = f.string(groupKafka, "transactional-id", "", "transactional.id for --exactly-once (default \"pgoutbox-<slot>\"); every instance on a slot must use the same")
	f.txnInterval = f.duration(groupKafka, "txn-interval", 100*time.Millisecond, "longest a Kafka transaction stays open with --exactly-once (read_committed latency)")
	f.txnMaxEvents = f.int(groupKafka, "txn-max-events", 5000, "events per Kafka transaction with --exactly-once before it commits, even mid-way\nthrough a PostgreSQL transaction")

	f.messagesPrefix = f.string(groupMapping, "messages-prefix", "", "also publish transactional pg_logical_emit_message() messages with this `prefix` (PostgreSQL 14+),\nmapping their JSON fields like the table's columns; with --table \"\" no table is needed")
	f.txnHeaders = f.bool(groupMapping, "transaction-headers", false, "add headers pgoutbox.lsn (the transaction's commit LSN), pgoutbox.xid and pgoutbox.index\n(the event's 0-based position in its transaction), the same on every replay. Debezium: provide.transaction.metadata")
	f.debeziumConfig = f.string(groupMapping, "debezium-config", "", "configure from a Debezium PostgreSQL connector configuration `file` (REST JSON or .properties);\nflags given explicitly win. See 'pgoutbox debezium-config FILE'")

	f.backfill = &backfillFlag{}
	f.groups["backfill"] = groupPostgres
	f.fs.Var(f.backfill, "backfill", "on first start (when pgoutbox creates the slot), publish the rows already in the table,\nread in the slot's snapshot so none is missed or doubled; --backfill=CONDITION selects\nthem with an SQL condition, e.g. --backfill=\"status = 'PENDING'\"")
	f.backfillOrder = f.string(groupPostgres, "backfill-order", "", "`column` to publish backfilled rows in, e.g. created_at (default: the id column)")
	f.checkpointStore = f.string(groupOps, "checkpoint-store", relay.StoreFile, "where the confirmed position is saved before each confirm: file, or postgres\n(a table in the source database, for standbys on other hosts)")
	f.checkpointFile = f.string(groupOps, "checkpoint-file", "pgoutbox.checkpoint", "checkpoint `path` for --checkpoint-store=file")
	f.checkpointTable = f.string(groupOps, "checkpoint-table", "public.pgoutbox_checkpoint", "checkpoint `table` for --checkpoint-store=postgres")
	f.statusInterval = f.duration(groupOps, "status-interval", time.Second, "how often the acknowledged position is checkpointed and confirmed to PostgreSQL")
	f.shutdownTimeout = f.duration(groupOps, "shutdown-timeout", 30*time.Second, "how long SIGTERM waits for in-flight events to be acknowledged")
	f.metricsAddr = f.string(groupOps, "metrics-addr", "", "serve /metrics, /healthz and /readyz on this `address` (e.g. 127.0.0.1:9187); off when empty")
	return f
}

// build turns parsed flags into a validated configuration.
func (f *relayFlags) build() (*options, error) {
	dbz, dbzKafka, err := f.applyDebezium()
	if err != nil {
		return nil, err
	}
	o := &options{logLevel: *f.log.level, logFormat: *f.log.format, metrics: *f.metricsAddr, debezium: dbz}
	kafka, err := f.kafka.build(dbzKafka)
	if err != nil {
		return nil, err
	}
	mapping, err := f.mapping.build()
	if err != nil {
		return nil, err
	}
	o.cfg = relay.Config{
		PostgresURL:        *f.postgresURL,
		Slot:               *f.slot,
		Publication:        *f.publication,
		Mapping:            mapping,
		Kafka:              kafka,
		CheckpointStore:    *f.checkpointStore,
		CheckpointFile:     *f.checkpointFile,
		CheckpointTable:    *f.checkpointTable,
		MaxInFlight:        *f.maxInFlight,
		StatusInterval:     *f.statusInterval,
		ShutdownTimeout:    *f.shutdownTimeout,
		AcceptGap:          *f.acceptGap,
		OnError:            *f.onError,
		DeadLetterTopic:    *f.deadLetter,
		SlotFailover:       *f.slotFailover,
		SyncGuard:          *f.syncGuard,
		TransactionHeaders: *f.txnHeaders,
		RetryActive:        *f.retryActive,
		MessagesPrefix:     *f.messagesPrefix,
		Backfill:           f.backfill.set,
		BackfillWhere:      f.backfill.where,
		BackfillOrder:      *f.backfillOrder,
		ExactlyOnce:        *f.exactlyOnce,
		CheckpointTopic:    *f.checkpointTopic,
		TransactionalID:    *f.txnID,
		TxnInterval:        *f.txnInterval,
		TxnMaxEvents:       *f.txnMaxEvents,
	}
	if o.cfg.BackfillOrder == "" {
		o.cfg.BackfillOrder = o.cfg.Mapping.IDColumn
	}
	if err := o.cfg.Validate(); err != nil {
		return nil, &usageError{err}
	}
	if err := f.log.check(); err != nil {
		return nil, err
	}
	return o, nil
}

// postgresURLFlag is --postgres-url, shared by every command.
func (f *flags) postgresURLFlag() *string {
	return f.string(groupPostgres, "postgres-url", "", "PostgreSQL connection `URL` or DSN (postgres://user:pass@host:5432/db?sslmode=verify-full); TLS through sslmode/sslrootcert")
}

// kafkaFlags are the producer's connection flags, shared by run and republish.
type kafkaFlags struct {
	brokers, configFile *string
	config              *listFlag
}

func (f *flags) kafkaFlags() kafkaFlags {
	return kafkaFlags{
		brokers:    f.string(groupKafka, "kafka-brokers", "", "Kafka bootstrap `servers` (host:port,host:port)"),
		config:     f.list(groupKafka, "kafka-config", "librdkafka property `key=value` (repeatable), e.g. security.protocol=SASL_SSL"),
		configFile: f.string(groupKafka, "kafka-config-file", "", "librdkafka properties `file` (key=value lines, # comments), as kcat -F reads; --kafka-config wins"),
	}
}

// build reads the properties file and merges --kafka-config over it; base (from
// --debezium-config, key=value) comes first, so explicit properties win one by one.
func (k kafkaFlags) build(base []string) (sink.Config, error) {
	props := map[string]string{}
	for _, kv := range base {
		key, v, err := sink.ParseProperty(kv)
		if err != nil {
			return sink.Config{}, &usageError{err}
		}
		props[key] = v
	}
	if *k.configFile != "" {
		fileProps, err := sink.ReadPropertiesFile(*k.configFile)
		if err != nil {
			return sink.Config{}, &usageError{err}
		}
		for key, v := range fileProps {
			props[key] = v
		}
	}
	for _, kv := range k.config.values {
		key, v, err := sink.ParseProperty(kv)
		if err != nil {
			return sink.Config{}, &usageError{err}
		}
		props[key] = v
	}
	return sink.Config{Brokers: *k.brokers, Properties: props, ClientID: "pgoutbox"}, nil
}

// mappingFlags say how a row becomes a Kafka record, shared by run and republish.
type mappingFlags struct {
	tables, headers, fields                   *listFlag
	topic, idCol, keyCol, typeCol, payloadCol *string
	keyFormat, valueFormat, headerFormat      *string
	fieldsMissing, timestampCol, versionCol   *string
	routeRegex, routeReplacement, topicPrefix *string
	tombstoneOnEmpty, expandJSON              *bool
	jsonNulls, invalidOp                      *string
}

func (f *flags) mappingFlags() mappingFlags {
	d := outbox.DefaultConfig()
	m := mappingFlags{
		tables:           f.list(groupPostgres, "table", "outbox `table` (schema.table), repeatable for several outbox tables of one layout;\n\"\" for none (a tableless outbox). Debezium: table.include.list"),
		topic:            f.string(groupMapping, "topic", "", "topic `template` with {column} placeholders (default \"outbox.event.{<aggregatetype column>}\")"),
		idCol:            f.string(groupMapping, "id-column", d.IDColumn, "`column` with the event id, sent as header \"id\""),
		keyCol:           f.string(groupMapping, "key-column", d.KeyColumn, "`column` with the record key (NULL gives a null key)"),
		typeCol:          f.string(groupMapping, "aggregatetype-column", d.AggregateTypeColumn, "`column` the default topic template routes by"),
		payloadCol:       f.string(groupMapping, "payload-column", d.PayloadColumn, "`column` with the record value (jsonb, json, text or bytea; NULL gives a null value)"),
		headers:          f.list(groupMapping, "header-column", "also send `column[=header]` as a header (repeatable), e.g. type=eventType"),
		keyFormat:        f.string(groupMapping, "key-format", string(outbox.FormatRaw), "key bytes as a Kafka Connect key.converter writes them: raw (StringConverter),\njson (JsonConverter, schemas.enable=false) or json-envelope (JsonConverter, schemas.enable=true)"),
		valueFormat:      f.string(groupMapping, "value-format", string(outbox.FormatRaw), "value bytes as value.converter writes them: raw, json or json-envelope"),
		headerFormat:     f.string(groupMapping, "header-format", string(outbox.FormatRaw), "header bytes as header.converter writes them: raw (SimpleHeaderConverter), json or json-envelope"),
		fields:           f.list(groupMapping, "additional-field", "Debezium additional field `column:placement[:alias]` (repeatable; commas allowed): placement header,\nenvelope (beside the payload in the value) or partition. Debezium: table.fields.additional.placement"),
		fieldsMissing:    f.string(groupMapping, "additional-field-missing", outbox.MissingError, "an additional field the table lacks: error or ignore. Debezium: table.field.additional.missing"),
		timestampCol:     f.string(groupMapping, "timestamp-column", "", "timestamp `column` for the record timestamp (default: the commit time). Debezium: table.field.event.timestamp"),
		versionCol:       f.string(groupMapping, "schema-version-column", "", "integer `column` with the envelope schema's version. Debezium: table.field.event.schema.version"),
		routeRegex:       f.string(groupMapping, "route-topic-regex", "", "`regex` matched against the aggregate type column; routes with --route-topic-replacement.\nDebezium: route.topic.regex (default (?<routedByValue>.*))"),
		routeReplacement: f.string(groupMapping, "route-topic-replacement", "", "topic `replacement` for --route-topic-regex ($1, ${name}). Debezium: route.topic.replacement\n(default outbox.event.${routedByValue})"),
		tombstoneOnEmpty: f.bool(groupMapping, "tombstone-on-empty-payload", false, "publish a NULL or blank payload as a tombstone (null value). Debezium: route.tombstone.on.empty.payload"),
		expandJSON:       f.bool(groupMapping, "expand-json-payload", false, "publish a JSON payload as JSON, not as a JSON string (needs a json value format).\nDebezium: table.expand.json.payload"),
		jsonNulls:        f.string(groupMapping, "json-payload-null-behavior", outbox.NullIgnore, "null members of an expanded payload: ignore or optional_bytes. Debezium: table.json.payload.null.behavior"),
		invalidOp:        f.string(groupMapping, "op-invalid-behavior", outbox.OpWarn, "an UPDATE of an outbox table (if the publication publishes updates): warn, error or fatal.\nDebezium: table.op.invalid.behavior"),
		topicPrefix:      f.string(groupMapping, "topic-prefix", "", "Debezium's topic.prefix: names the json-envelope schema of a value with envelope fields"),
	}
	m.tables.def = d.FirstTable()
	return m
}

// logFlags are --log-level and --log-format.
type logFlags struct{ level, format *string }

func (f *flags) logFlags() logFlags {
	return logFlags{
		level:  f.string(groupOps, "log-level", "info", "debug, info, warn or error"),
		format: f.string(groupOps, "log-format", "json", "json or console"),
	}
}

func (l logFlags) check() error {
	switch *l.format {
	case "json", "console":
	default:
		return &usageError{fmt.Errorf("--log-format %q: want json or console", *l.format)}
	}
	if _, err := parseLevel(*l.level); err != nil {
		return &usageError{err}
	}
	return nil
}

// getenv is os.Getenv; tests replace the environment through run's callers.
var getenv = os.Getenv
