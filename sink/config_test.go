package sink

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestCheckProperties(t *testing.T) {
	for _, c := range []struct {
		name    string
		props   map[string]string
		wantErr string // "" means accepted
	}{
		{"none", nil, ""},
		{"ordinary", map[string]string{"linger.ms": "5", "compression.type": "zstd", "security.protocol": "SASL_SSL"}, ""},
		{"acks=all", map[string]string{"acks": "all"}, ""},
		{"acks=ALL", map[string]string{"acks": "ALL"}, ""},
		{"acks=-1", map[string]string{"acks": "-1"}, ""},
		{"enable.idempotence=true", map[string]string{"enable.idempotence": "true"}, ""},
		{"enable.idempotence=TRUE", map[string]string{"enable.idempotence": "TRUE"}, ""},

		{"go.events.channel.enable", map[string]string{"go.events.channel.enable": "true"}, "set by pgoutbox"},
		{"go.delivery.reports", map[string]string{"go.delivery.reports": "false"}, "set by pgoutbox"},
		{"bootstrap.servers", map[string]string{"bootstrap.servers": "k:9092"}, "--kafka-brokers"},
		{"metadata.broker.list", map[string]string{"metadata.broker.list": "k:9092"}, "--kafka-brokers"},
		{"transactional.id", map[string]string{"transactional.id": "x"}, "--exactly-once"},
		{"enable.idempotence=false", map[string]string{"enable.idempotence": "false"}, "pgoutbox requires enable.idempotence=true"},
		{"enable.idempotence=0", map[string]string{"enable.idempotence": "0"}, "enable.idempotence"},
		{"acks=1", map[string]string{"acks": "1"}, "pgoutbox requires acks=all"},
		{"acks=0", map[string]string{"acks": "0"}, "acks=0 would allow lost or reordered events"},
		{"bad among good", map[string]string{"linger.ms": "5", "acks": "1", "compression.type": "lz4"}, "acks"},
	} {
		err := CheckProperties(c.props)
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%s: CheckProperties = %v, want nil", c.name, err)
		case c.wantErr != "" && err == nil:
			t.Errorf("%s: CheckProperties = nil, want an error containing %q", c.name, c.wantErr)
		case c.wantErr != "" && !strings.Contains(err.Error(), c.wantErr):
			t.Errorf("%s: CheckProperties = %q, want it to contain %q", c.name, err, c.wantErr)
		}
	}
}

func TestParseProperty(t *testing.T) {
	for _, c := range []struct {
		in, k, v string
	}{
		{"linger.ms=5", "linger.ms", "5"},
		{"  linger.ms =  5  ", "linger.ms", "5"},
		{"sasl.jaas=a=b=c", "sasl.jaas", "a=b=c"},
		{"client.id=", "client.id", ""},
	} {
		k, v, err := ParseProperty(c.in)
		if err != nil || k != c.k || v != c.v {
			t.Errorf("ParseProperty(%q) = %q, %q, %v; want %q, %q, nil", c.in, k, v, err, c.k, c.v)
		}
	}
	for _, in := range []string{"", "linger.ms", "=5", "  =5", "linger.ms 5"} {
		k, v, err := ParseProperty(in)
		if err == nil {
			t.Errorf("ParseProperty(%q) = %q, %q, nil; want an error", in, k, v)
			continue
		}
		if !strings.Contains(err.Error(), "want key=value") {
			t.Errorf("ParseProperty(%q) error %q does not say what is wanted", in, err)
		}
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kafka.properties")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadPropertiesFile(t *testing.T) {
	path := writeFile(t, `# pgoutbox Kafka settings
security.protocol=SASL_SSL

   # indented comment
sasl.mechanisms = SCRAM-SHA-512
sasl.username=alice
sasl.password=p=ss#word
	linger.ms=5	
linger.ms=10
`)
	got, err := ReadPropertiesFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"security.protocol": "SASL_SSL",
		"sasl.mechanisms":   "SCRAM-SHA-512",
		"sasl.username":     "alice",
		"sasl.password":     "p=ss#word",
		"linger.ms":         "10", // the last line wins
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ReadPropertiesFile = %v, want %v", got, want)
	}
}

func TestReadPropertiesFileCRLF(t *testing.T) {
	got, err := ReadPropertiesFile(writeFile(t, "linger.ms=5\r\n# c\r\n\r\nacks=all\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got["linger.ms"] != "5" || got["acks"] != "all" || len(got) != 2 {
		t.Errorf("ReadPropertiesFile with CRLF lines = %q", got)
	}
}

func TestReadPropertiesFileEmpty(t *testing.T) {
	got, err := ReadPropertiesFile(writeFile(t, "# only a comment\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || len(got) != 0 {
		t.Errorf("ReadPropertiesFile of a comment-only file = %#v, want an empty map", got)
	}
}

func TestReadPropertiesFileBadLine(t *testing.T) {
	path := writeFile(t, "# header\nlinger.ms=5\n\nthis line has no equals sign\nacks=all\n")
	got, err := ReadPropertiesFile(path)
	if err == nil {
		t.Fatalf("ReadPropertiesFile = %v, nil; want an error", got)
	}
	for _, want := range []string{path, "line 4", "want key=value"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestReadPropertiesFileMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing.properties")
	_, err := ReadPropertiesFile(path)
	if err == nil {
		t.Fatal("ReadPropertiesFile of a missing file succeeded")
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v does not wrap fs.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), "read kafka config file") || !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not say which file it could not read", err)
	}
}

func TestPropertiesPrecedence(t *testing.T) {
	c := Config{
		Brokers: "b1:9092,b2:9092",
		Properties: map[string]string{
			"linger.ms":          "50",    // overrides a default
			"compression.type":   "zstd",  // not a default
			"acks":               "1",     // fixed: must not win
			"enable.idempotence": "false", // fixed: must not win
			"bootstrap.servers":  "evil:9092",
		},
		ClientID: "pgoutbox",
	}
	p := c.properties()
	for k, want := range map[string]string{
		"linger.ms":          "50",
		"compression.type":   "zstd",
		"acks":               "all",
		"enable.idempotence": "true",
		"bootstrap.servers":  "b1:9092,b2:9092",
		"partitioner":        "murmur2_random",
		"message.timeout.ms": "0",
		"client.id":          "pgoutbox",
	} {
		if p[k] != want {
			t.Errorf("properties()[%q] = %q, want %q", k, p[k], want)
		}
	}
	for k, v := range defaults {
		if _, overridden := c.Properties[k]; overridden {
			continue
		}
		if p[k] != v {
			t.Errorf("default %s=%s lost: got %q", k, v, p[k])
		}
	}
	if c.Properties["acks"] != "1" {
		t.Error("properties() modified the caller's map")
	}
}

func TestPropertiesClientID(t *testing.T) {
	for _, c := range []struct {
		name    string
		cfg     Config
		want    string
		wantSet bool
	}{
		{"from config", Config{Brokers: "b:1", ClientID: "pgoutbox"}, "pgoutbox", true},
		{"user property wins", Config{Brokers: "b:1", ClientID: "pgoutbox", Properties: map[string]string{"client.id": "orders-relay"}}, "orders-relay", true},
		{"none", Config{Brokers: "b:1"}, "", false},
	} {
		got, ok := c.cfg.properties()["client.id"]
		if ok != c.wantSet || got != c.want {
			t.Errorf("%s: client.id = %q (set %v), want %q (set %v)", c.name, got, ok, c.want, c.wantSet)
		}
	}
}

func TestRedacted(t *testing.T) {
	secrets := map[string]string{
		"sasl.password":                  "s1-sasl",
		"ssl.key.password":               "s2-keypass",
		"ssl.keystore.password":          "s3-keystore",
		"ssl.key.pem":                    "s4-BEGIN PRIVATE KEY",
		"sasl.oauthbearer.client.secret": "s5-oauth",
		"sasl.oauthbearer.client.credentials.client.secret": "s6-oauth2",
		"sasl.oauthbearer.assertion.private.key.pem":        "s7-assertion-key",
		// librdkafka marks the next two sensitive (_RK_SENSITIVE in rdkafka_conf.c).
		"sasl.oauthbearer.assertion.private.key.passphrase": "s8-passphrase",
		"sasl.oauthbearer.config":                           "s9-principal=admin",
	}
	props := map[string]string{"sasl.username": "alice", "security.protocol": "SASL_SSL"}
	for k, v := range secrets {
		props[k] = v
	}
	out := Config{Brokers: "b1:9092", Properties: props, ClientID: "pgoutbox"}.Redacted()

	for k, v := range secrets {
		if strings.Contains(out, v) {
			t.Errorf("Redacted() shows the value of %s", k)
		}
		if !strings.Contains(out, k+"=[redacted]") {
			t.Errorf("Redacted() lacks %s=[redacted]", k)
		}
	}
	for _, want := range []string{"sasl.username=alice", "security.protocol=SASL_SSL", "bootstrap.servers=b1:9092", "acks=all", "client.id=pgoutbox"} {
		if !strings.Contains(out, want) {
			t.Errorf("Redacted() lacks %q: %s", want, out)
		}
	}
}

func TestRedactedIsSortedAndComplete(t *testing.T) {
	c := Config{Brokers: "b:9092", Properties: map[string]string{"zz.custom": "1", "aa.custom": "2"}}
	out := c.Redacted()
	fields := strings.Fields(out)
	if len(fields) != len(c.properties()) {
		t.Fatalf("Redacted() has %d fields, properties() has %d: %s", len(fields), len(c.properties()), out)
	}
	for i := 1; i < len(fields); i++ {
		if fields[i-1] > fields[i] {
			t.Errorf("Redacted() not sorted: %q before %q", fields[i-1], fields[i])
		}
	}
	if fields[0] != "aa.custom=2" || fields[len(fields)-1] != "zz.custom=1" {
		t.Errorf("Redacted() = %s", out)
	}
}
