package debezium

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// Flag is one pgoutbox flag a configuration implies.
type Flag struct {
	Name  string // without the leading "--"
	Value string
	Shown string   // Value with secrets redacted, for output
	Bool  bool     // a boolean flag: given as --name alone
	From  []string // the Debezium options it comes from
	// Problem, when set, says why the flag could not be derived: it must then be
	// given explicitly, or pgoutbox refuses the configuration.
	Problem string
}

// Ignored is an option accepted because it does not matter for an outbox.
type Ignored struct{ Option, Reason string }

// Result is a converted configuration.
type Result struct {
	Name    string
	Flags   []Flag
	Ignored []Ignored
	Notes   []string // assumptions the user should check
}

// Refused lists the options pgoutbox cannot honour.
type Refused struct{ Options []Ignored }

func (e *Refused) Error() string {
	var parts []string
	for _, o := range e.Options {
		parts = append(parts, o.Option+": "+o.Reason)
	}
	return "debezium config: pgoutbox cannot honour " + strings.Join(parts, "; ")
}

// Debezium's defaults that differ from pgoutbox's (PostgresConnectorConfig.java).
const (
	defaultSlot        = "debezium"        // ReplicationConnection.Builder.DEFAULT_SLOT_NAME
	defaultPublication = "dbz_publication" // ReplicationConnection.Builder.DEFAULT_PUBLICATION_NAME
)

type converter struct {
	o       *Options
	used    map[string]bool
	r       *Result
	refused []Ignored
}

// Convert maps a Debezium PostgreSQL connector configuration to pgoutbox flags. An
// option pgoutbox cannot honour makes it return a *Refused naming every such option.
func Convert(o *Options) (*Result, error) {
	c := &converter{o: o, used: map[string]bool{}, r: &Result{Name: o.Name}}
	c.connector()
	c.database()
	c.replication()
	c.router()
	c.formats()
	c.producer()
	c.rest()
	if len(c.refused) > 0 {
		return nil, &Refused{Options: c.refused}
	}
	return c.r, nil
}

func (c *converter) take(key string) (string, bool) {
	v, ok := c.o.Values[key]
	if ok {
		c.used[key] = true
	}
	return strings.TrimSpace(v), ok
}

func (c *converter) flag(name, value string, from ...string) {
	c.r.Flags = append(c.r.Flags, Flag{Name: name, Value: value, Shown: value, From: from})
}

func (c *converter) boolFlag(name string, from ...string) {
	c.r.Flags = append(c.r.Flags, Flag{Name: name, Value: "true", Shown: "true", Bool: true, From: from})
}

func (c *converter) problem(name, problem string, from ...string) {
	c.r.Flags = append(c.r.Flags, Flag{Name: name, From: from, Problem: problem})
}

func (c *converter) ignore(key, reason string) {
	c.used[key] = true
	c.r.Ignored = append(c.r.Ignored, Ignored{key, reason})
}

func (c *converter) refuse(key, reason string) {
	c.used[key] = true
	c.refused = append(c.refused, Ignored{key, reason})
}

func (c *converter) note(format string, args ...any) {
	c.r.Notes = append(c.r.Notes, fmt.Sprintf(format, args...))
}

// provider reports a value that Kafka Connect resolves through a config provider
// (${file:…}, ${env:…}), which pgoutbox cannot.
func provider(v string) bool { return strings.Contains(v, "${") && strings.Contains(v, "}") }

func (c *converter) connector() {
	class, ok := c.take("connector.class")
	switch {
	case !ok:
		c.refuse("connector.class", "missing; pgoutbox reads a Debezium PostgreSQL connector's configuration")
	case class != "io.debezium.connector.postgresql.PostgresConnector" && class != "PostgresConnector" && class != "Postgres":
		c.refuse("connector.class", fmt.Sprintf("%s is not Debezium's PostgreSQL connector", class))
	}
	// PostgresConnectorConfig.PLUGIN_NAME defaults to decoderbufs (PostgresConnectorConfig.java:619-622).
	plugin, ok := c.take("plugin.name")
	switch {
	case !ok:
		c.refuse("plugin.name", "not set, so Debezium uses decoderbufs; pgoutbox reads pgoutput slots (set plugin.name=pgoutput if the slot is pgoutput)")
	case plugin != "pgoutput":
		c.refuse("plugin.name", fmt.Sprintf("%s: pgoutbox reads pgoutput only", plugin))
	}
}

// database builds --postgres-url from database.hostname, port, user, password, dbname
// and the SSL options, which keep their libpq names (PostgresConnectorConfig.java:851-898).
func (c *converter) database() {
	host, ok := c.take("database.hostname")
	port, _ := c.take("database.port")
	user, _ := c.take("database.user")
	password, hasPassword := c.take("database.password")
	dbname, _ := c.take("database.dbname")
	from := []string{"database.hostname"}
	query := url.Values{}
	for _, p := range []string{"sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword"} {
		if v, ok := c.take("database." + p); ok && v != "" {
			query.Set(p, v)
			from = append(from, "database."+p)
		}
	}
	if !ok {
		if port != "" || user != "" || dbname != "" {
			c.problem("postgres-url", "database.hostname is not set", "database.hostname")
		}
		return
	}
	for k, v := range map[string]string{"database.hostname": host, "database.port": port, "database.user": user, "database.password": password, "database.dbname": dbname} {
		if provider(v) {
			c.problem("postgres-url", k+" is resolved by a Kafka Connect config provider ("+v+"), which pgoutbox cannot read", k)
			return
		}
	}
	if port == "" {
		port = "5432"
	}
	u := url.URL{Scheme: "postgres", Host: host + ":" + port, Path: "/" + dbname, RawQuery: query.Encode()}
	shown := u
	if hasPassword {
		u.User = url.UserPassword(user, password)
		shown.User = url.UserPassword(user, "xxxxx")
	} else if user != "" {
		u.User = url.User(user)
		shown.User = u.User
	}
	if query.Has("sslpassword") {
		q := query
		q.Set("sslpassword", "xxxxx")
		shown.RawQuery = q.Encode()
	}
	c.r.Flags = append(c.r.Flags, Flag{Name: "postgres-url", Value: u.String(), Shown: shown.String(),
		From: append(from, "database.port", "database.user", "database.password", "database.dbname")})
}

func (c *converter) replication() {
	slot, ok := c.take("slot.name")
	if !ok {
		slot = defaultSlot
	}
	c.flag("slot", slot, "slot.name")
	pub, ok := c.take("publication.name")
	if !ok {
		pub = defaultPublication
	}
	c.flag("publication", pub, "publication.name")
	// publication.autocreate.mode (PostgresConnectorConfig.java:773-776) acts only when the
	// publication is missing; so does pgoutbox's own creation.
	mode, ok := c.take("publication.autocreate.mode")
	if !ok {
		mode = "all_tables"
	}
	{
		switch strings.ToLower(mode) {
		case "all_tables", "filtered":
			c.note("publication.autocreate.mode=%s: when the publication is missing, pgoutbox creates it FOR TABLE <tables> WITH (publish = 'insert') rather than Debezium's %s", mode, map[string]string{"all_tables": "FOR ALL TABLES", "filtered": "FOR TABLE <table.include.list>"}[strings.ToLower(mode)])
		case "disabled":
			c.note("publication.autocreate.mode=disabled: Debezium fails when the publication is missing; pgoutbox creates it FOR TABLE <tables> WITH (publish = 'insert') if its role may")
		case "no_tables":
			c.refuse("publication.autocreate.mode", "no_tables creates a publication without the outbox tables; pgoutbox needs them in it")
		default:
			c.refuse("publication.autocreate.mode", fmt.Sprintf("unknown mode %q", mode))
		}
	}
	tables, key := "", ""
	for _, k := range []string{"table.include.list", "table.whitelist"} {
		if v, ok := c.take(k); ok {
			tables, key = v, k
		}
	}
	if key == "" {
		c.problem("table", "table.include.list is not set, so Debezium captures every table; name the outbox tables", "table.include.list")
	} else {
		for _, entry := range strings.Split(tables, ",") {
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			name, err := literalTable(entry)
			if err != nil {
				c.refuse(key, err.Error())
				continue
			}
			c.flag("table", name, key)
		}
	}
	for _, k := range []string{"topic.prefix", "database.server.name"} {
		if v, ok := c.take(k); ok {
			c.flag("topic-prefix", v, k)
			break
		}
	}
	if v, ok := c.take("slot.failover"); ok {
		if b, err := strconv.ParseBool(v); err != nil {
			c.refuse("slot.failover", fmt.Sprintf("%q is not a boolean", v))
		} else if b {
			c.boolFlag("slot-failover", "slot.failover")
		}
	}
	if v, ok := c.take("status.update.interval.ms"); ok {
		if ms, err := strconv.Atoi(v); err != nil || ms <= 0 {
			c.refuse("status.update.interval.ms", fmt.Sprintf("%q is not a positive number of milliseconds", v))
		} else {
			c.flag("status-interval", strconv.Itoa(ms)+"ms", "status.update.interval.ms")
		}
	}
}

// literalTable turns a table.include.list entry, a regular expression Debezium matches
// against "schema.table", into a table name when it names exactly one: escaped dots
// are literal dots; anything else that makes it a pattern is refused, since the tables
// it matches would need the catalog.
var tablePattern = regexp.MustCompile(`^[A-Za-z0-9_$]+(\\?\.[A-Za-z0-9_$]+)?$`)

func literalTable(entry string) (string, error) {
	if !tablePattern.MatchString(entry) {
		return "", fmt.Errorf("entry %q is a pattern; pgoutbox needs the outbox tables named one by one (schema.table)", entry)
	}
	name := strings.ReplaceAll(entry, `\.`, ".")
	if !strings.Contains(name, ".") {
		name = "public." + name
	}
	return name, nil
}

// routerOptions maps the EventRouter's options (EventRouterConfigDefinition.java:195-341)
// to pgoutbox flags.
var routerOptions = []struct{ option, flag string }{
	{"table.field.event.id", "id-column"},
	{"table.field.event.key", "key-column"},
	{"table.field.event.payload", "payload-column"},
	{"table.field.event.timestamp", "timestamp-column"},
	{"table.field.event.schema.version", "schema-version-column"},
	{"table.fields.additional.placement", "additional-field"},
	{"table.field.additional.missing", "additional-field-missing"},
	{"route.by.field", "aggregatetype-column"},
	{"route.topic.regex", "route-topic-regex"},
	{"route.topic.replacement", "route-topic-replacement"},
	{"route.tombstone.on.empty.payload", "tombstone-on-empty-payload"},
	{"table.op.invalid.behavior", "op-invalid-behavior"},
	{"table.expand.json.payload", "expand-json-payload"},
	{"table.json.payload.null.behavior", "json-payload-null-behavior"},
}

// routerDefaultOnly are EventRouter options pgoutbox honours only at their default.
var routerDefaultOnly = map[string]string{
	"field.name.adjustment.mode":      "none",               // CommonConnectorConfig.FIELD_NAME_ADJUSTMENT_MODE, used by JSON expansion
	"tracing.span.context.field":      "tracingspancontext", // ActivateTracingSpan: no span without OpenTelemetry
	"tracing.operation.name":          "debezium-read",
	"tracing.with.context.field.only": "false",
}

func isEventRouter(class string) bool {
	return class == "io.debezium.transforms.outbox.EventRouter" || class == "EventRouter"
}

// router finds the EventRouter in the transforms chain, whatever its alias.
func (c *converter) router() {
	chain, ok := c.take("transforms")
	var aliases []string
	for _, a := range strings.Split(chain, ",") {
		if a = strings.TrimSpace(a); a != "" {
			aliases = append(aliases, a)
		}
	}
	alias := ""
	inChain := map[string]bool{}
	for _, a := range aliases {
		inChain[a] = true
		class, _ := c.take("transforms." + a + ".type")
		switch {
		case isEventRouter(class) && alias == "":
			alias = a
		case isEventRouter(class):
			c.refuse("transforms."+a+".type", "a second EventRouter; pgoutbox applies one")
		default:
			c.refuse("transforms."+a+".type", fmt.Sprintf("transform %q (%s): pgoutbox applies only Debezium's EventRouter", a, class))
		}
	}
	if !ok || alias == "" {
		c.refuse("transforms", "no io.debezium.transforms.outbox.EventRouter in the transforms chain; pgoutbox publishes outbox events as the EventRouter does")
	}
	prefix := "transforms." + alias + "."
	for _, ro := range routerOptions {
		v, ok := c.take(prefix + ro.option)
		if !ok {
			continue
		}
		key := prefix + ro.option
		switch ro.flag {
		case "tombstone-on-empty-payload", "expand-json-payload":
			b, err := strconv.ParseBool(v)
			if err != nil {
				c.refuse(key, fmt.Sprintf("%q is not a boolean", v))
			} else if b {
				c.boolFlag(ro.flag, key)
			}
			continue
		case "additional-field":
			fields, err := outbox.ParseFields(v)
			if err != nil {
				c.refuse(key, err.Error())
				continue
			}
			var parts []string
			for _, f := range fields {
				p := f.Column + ":" + f.Placement
				if f.Alias != "" {
					p += ":" + f.Alias
				}
				parts = append(parts, p)
			}
			v = strings.Join(parts, ",")
		case "additional-field-missing", "op-invalid-behavior", "json-payload-null-behavior":
			v = strings.ToLower(v)
		}
		c.flag(ro.flag, v, key)
	}
	for option, def := range routerDefaultOnly {
		if v, ok := c.take(prefix + option); ok && !strings.EqualFold(v, def) {
			c.refuse(prefix+option, fmt.Sprintf("%q; pgoutbox honours only %q", v, def))
		}
	}
	if _, ok := c.take(prefix + "table.field.event.type"); ok {
		c.ignore(prefix+"table.field.event.type", "Debezium's EventRouter no longer reads it (no header or field comes from it); use table.fields.additional.placement")
	}
	if _, ok := c.take(prefix + "predicate"); ok {
		c.refuse(prefix+"predicate", "pgoutbox applies the EventRouter to every outbox table; a predicate cannot be evaluated")
	}
	if _, ok := c.take(prefix + "negate"); ok {
		c.refuse(prefix+"negate", "belongs to a predicate, which pgoutbox cannot evaluate")
	}
	for _, k := range c.o.sortedKeys() {
		switch {
		case c.used[k]:
		case strings.HasPrefix(k, "transforms."):
			a, _, _ := strings.Cut(strings.TrimPrefix(k, "transforms."), ".")
			switch {
			case a == alias:
				c.refuse(k, "not an EventRouter option pgoutbox knows")
			case !inChain[a]:
				c.ignore(k, fmt.Sprintf("transform %q is not in the transforms list", a))
			default:
				c.refuse(k, fmt.Sprintf("belongs to transform %q, which pgoutbox does not apply", a))
			}
		case k == "predicates" || strings.HasPrefix(k, "predicates."):
			c.refuse(k, "pgoutbox cannot evaluate Kafka Connect predicates")
		}
	}
}

// formats maps key.converter, value.converter and header.converter.
func (c *converter) formats() {
	for _, kind := range []string{"key", "value", "header"} {
		f, ok := c.format(kind)
		if ok && f != outbox.FormatRaw {
			c.flag(kind+"-format", string(f), kind+".converter")
		}
	}
}

// converterClass names a converter by its simple name, as Connect's plugin aliases do.
func converterClass(class string) string {
	if i := strings.LastIndexByte(class, '.'); i >= 0 {
		class = class[i+1:]
	}
	return strings.TrimSuffix(class, "Converter")
}

func (c *converter) format(kind string) (outbox.Format, bool) {
	key := kind + ".converter"
	class, ok := c.take(key)
	schemasKey := key + ".schemas.enable"
	schemasText, hasSchemas := c.take(schemasKey)
	name := converterClass(class)
	if !ok {
		if kind == "header" {
			// WorkerConfig.HEADER_CONVERTER_CLASS_DEFAULT is SimpleHeaderConverter.
			c.note("header.converter is not set: the worker's applies; Kafka Connect's default SimpleHeaderConverter writes text as it is (--header-format raw)")
			name = "SimpleHeader"
		} else {
			c.note("%s is not set: the worker's converter applies; assuming the JsonConverter with schemas.enable=%s of Kafka's shipped connect-*.properties — pass --%s-format if your worker differs", key, orDefault(schemasText, "true"), kind)
			name = "Json"
		}
	}
	var f outbox.Format
	switch name {
	case "Json":
		schemas := true
		if hasSchemas {
			b, err := strconv.ParseBool(schemasText)
			if err != nil {
				c.refuse(schemasKey, fmt.Sprintf("%q is not a boolean", schemasText))
				return "", false
			}
			schemas = b
		}
		f = outbox.FormatJSON
		if schemas {
			f = outbox.FormatJSONEnvelope
		}
		if v, ok := c.take(key + ".decimal.format"); ok && !strings.EqualFold(v, "BASE64") {
			c.refuse(key+".decimal.format", fmt.Sprintf("%s; pgoutbox writes decimals as JsonConverter's default BASE64", v))
		}
	case "String", "SimpleHeader":
		f = outbox.FormatRaw
		if hasSchemas {
			c.ignore(schemasKey, class+" writes no schema")
		}
		for _, enc := range []string{key + ".converter.encoding", key + ".encoding"} {
			if v, ok := c.take(enc); ok && !strings.EqualFold(v, "UTF-8") && !strings.EqualFold(v, "UTF8") {
				c.refuse(enc, fmt.Sprintf("%s; pgoutbox writes UTF-8", v))
			}
		}
	case "BinaryData", "ByteArray":
		if kind == "header" {
			c.refuse(key, class+" is not a header converter pgoutbox knows")
			return "", false
		}
		f = outbox.FormatRaw
		c.note("%s=%s writes a bytea column's bytes as they are, as --%s-format raw does; Kafka Connect fails on other column types", key, class, kind)
	default:
		c.refuse(key, fmt.Sprintf("%s: pgoutbox writes what StringConverter, JsonConverter, SimpleHeaderConverter and the byte-array converters write", class))
		return "", false
	}
	for _, k := range c.o.sortedKeys() {
		if !c.used[k] && strings.HasPrefix(k, key+".") {
			switch {
			case strings.HasPrefix(k, key+".delegate."):
				c.ignore(k, "the delegate converts Debezium's non-outbox records (heartbeats, schema changes)")
			case strings.HasSuffix(k, ".schemas.cache.size"), strings.HasSuffix(k, ".replace.null.with.default"):
				c.ignore(k, "pgoutbox caches nothing and writes no schema defaults")
			default:
				c.refuse(k, "a converter option pgoutbox does not know")
			}
		}
	}
	return f, true
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// producer maps producer.override.* to librdkafka properties: the names librdkafka
// shares with the Java producer, a few renamed ones, and the username and password of
// a PLAIN or SCRAM sasl.jaas.config.
func (c *converter) producer() {
	const prefix = "producer.override."
	for _, k := range c.o.sortedKeys() {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		v, _ := c.take(k)
		name := strings.TrimPrefix(k, prefix)
		if provider(v) {
			c.refuse(k, "resolved by a Kafka Connect config provider, which pgoutbox cannot read")
			continue
		}
		props, err := librdkafka(name, v)
		if err != nil {
			c.refuse(k, err.Error())
			continue
		}
		for _, p := range props {
			if p[0] == "bootstrap.servers" {
				c.flag("kafka-brokers", p[1], k)
				continue
			}
			f := Flag{Name: "kafka-config", Value: p[0] + "=" + p[1], Shown: p[0] + "=" + p[1], From: []string{k}}
			if secretProperty(p[0]) {
				f.Shown = p[0] + "=xxxxx"
			}
			c.r.Flags = append(c.r.Flags, f)
		}
	}
}

// sameName are Java producer properties librdkafka knows under the same name and meaning.
var sameName = map[string]bool{
	"acks": true, "compression.type": true, "linger.ms": true, "batch.size": true, "request.timeout.ms": true,
	"retries": true, "retry.backoff.ms": true, "retry.backoff.max.ms": true, "max.in.flight.requests.per.connection": true,
	"enable.idempotence": true, "client.id": true, "security.protocol": true, "sasl.mechanism": true,
	"ssl.endpoint.identification.algorithm": true, "ssl.key.password": true, "ssl.keystore.location": true,
	"ssl.keystore.password": true, "ssl.cipher.suites": true, "reconnect.backoff.ms": true, "reconnect.backoff.max.ms": true,
	"metadata.max.age.ms": true, "connections.max.idle.ms": true, "socket.connection.setup.timeout.ms": true,
	"delivery.timeout.ms": true, "transaction.timeout.ms": true, "client.dns.lookup": true, "sasl.kerberos.service.name": true,
	"bootstrap.servers": true,
}

// renamed are Java producer properties librdkafka knows under another name.
var renamed = map[string]string{
	"max.request.size":     "message.max.bytes",
	"receive.buffer.bytes": "socket.receive.buffer.bytes",
	"send.buffer.bytes":    "socket.send.buffer.bytes",
}

var jaasPair = regexp.MustCompile(`(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"`)

func librdkafka(name, value string) ([][2]string, error) {
	var props [][2]string
	switch {
	case sameName[name]:
		props = [][2]string{{name, value}}
	case renamed[name] != "":
		props = [][2]string{{renamed[name], value}}
	case name == "sasl.jaas.config":
		if !strings.Contains(value, "PlainLoginModule") && !strings.Contains(value, "ScramLoginModule") {
			return nil, errors.New("only a PLAIN or SCRAM login module's username and password map to librdkafka")
		}
		for _, m := range jaasPair.FindAllStringSubmatch(value, -1) {
			switch m[1] {
			case "username":
				props = append(props, [2]string{"sasl.username", m[2]})
			case "password":
				props = append(props, [2]string{"sasl.password", m[2]})
			}
		}
		if len(props) != 2 {
			return nil, errors.New("want the login module's username and password")
		}
	case name == "transactional.id":
		return nil, errors.New("pgoutbox derives the transactional id from the slot (--exactly-once, --transactional-id)")
	case name == "partitioner.class":
		return nil, errors.New("pgoutbox partitions as the Java producer's default partitioner does (murmur2 of the key)")
	case strings.HasPrefix(name, "ssl.truststore."):
		return nil, errors.New("librdkafka reads no Java truststore; give the CA as --kafka-config ssl.ca.location=<PEM file>")
	default:
		return nil, errors.New("no librdkafka property of that name and meaning; set its librdkafka counterpart with --kafka-config")
	}
	for _, p := range props {
		if err := checkProperty(p[0], p[1]); err != nil {
			return nil, err
		}
	}
	return props, nil
}

// checkProperty refuses the librdkafka settings that pgoutbox fixes for its guarantees.
func checkProperty(k, v string) error {
	switch {
	case k == "acks" && v != "all" && v != "-1":
		return fmt.Errorf("acks=%s would allow lost events; pgoutbox produces with acks=all", v)
	case k == "enable.idempotence" && !strings.EqualFold(v, "true"):
		return errors.New("pgoutbox produces with enable.idempotence=true")
	case k == "max.in.flight.requests.per.connection":
		if n, err := strconv.Atoi(v); err != nil || n > 5 {
			return fmt.Errorf("%s: the idempotent producer allows at most 5", v)
		}
	}
	return nil
}

func secretProperty(k string) bool {
	return strings.Contains(k, "password") || strings.Contains(k, "secret")
}
