package sink

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strings"
)

// Config configures the Kafka producer.
type Config struct {
	// Brokers is the bootstrap list, "host:port,host:port".
	Brokers string
	// Properties are librdkafka properties from --kafka-config and --kafka-config-file;
	// they override the defaults below except the ones pgoutbox's guarantees rest on.
	Properties map[string]string
	// ReportFields asks for key, value and headers back on failed delivery reports,
	// which a dead-letter policy needs. It costs a copy per report, so it is off by default.
	ReportFields bool
	// ClientID names the producer in broker logs.
	ClientID string
	// Isolate sends one message per request, so that a request the broker refuses
	// names exactly one event. Slow; used only to find a refused event.
	Isolate bool
}

// defaults are pgoutbox's librdkafka settings. Each is a choice, not a copy of
// librdkafka's defaults:
//   - enable.idempotence, acks=all: no duplicates or reordering from producer retries.
//   - partitioner=murmur2_random: the Java client's key hashing, so an aggregate lands on
//     the partition a Java producer (Debezium) would have chosen.
//   - message.timeout.ms=0: never give up on a message; a message that expires leaves a
//     gap a retry would reorder. Backpressure and the metrics show a stuck broker instead.
//   - linger.ms=1: events are small and latency matters; batches still form under load.
//   - queue.buffering.max.kbytes bounds memory when payloads are large.
//   - enable.gapless.guarantee: without it, when a batch fails librdkafka bumps the
//     epoch and goes on sending the partition's later messages, so the failed ones,
//     published again from the checkpoint, would land after them: a key reordered.
//     With it, such a failure is fatal and the producer is rebuilt before anything
//     else of that partition is sent.
var defaults = map[string]string{
	"enable.idempotence":           "true",
	"acks":                         "all",
	"partitioner":                  "murmur2_random",
	"message.timeout.ms":           "0",
	"linger.ms":                    "1",
	"batch.num.messages":           "10000",
	"queue.buffering.max.messages": "100000",
	"queue.buffering.max.kbytes":   "16384",
	"socket.keepalive.enable":      "true",
	"reconnect.backoff.max.ms":     "5000",
	"enable.gapless.guarantee":     "true",
}

// fixed are properties a user may not weaken: pgoutbox's delivery guarantees depend on them.
var fixed = map[string]string{
	"enable.idempotence":       "true",
	"acks":                     "all",
	"enable.gapless.guarantee": "true",
}

// CheckProperties rejects properties that would break pgoutbox's guarantees or that
// pgoutbox sets itself.
func CheckProperties(props map[string]string) error {
	for k, v := range props {
		switch {
		case strings.HasPrefix(k, "go."):
			return fmt.Errorf("kafka property %q is set by pgoutbox and cannot be changed", k)
		case k == "bootstrap.servers" || k == "metadata.broker.list":
			return fmt.Errorf("kafka property %q: use --kafka-brokers", k)
		case k == "transactional.id":
			return fmt.Errorf("kafka property %q: use --exactly-once, which derives it from the slot", k)
		case k == "acks" && (v == "-1" || strings.EqualFold(v, "all")):
		case (k == "enable.idempotence" || k == "enable.gapless.guarantee") && strings.EqualFold(v, "true"):
		case fixed[k] != "":
			return fmt.Errorf("kafka property %s=%s would allow lost or reordered events; pgoutbox requires %s=%s", k, v, k, fixed[k])
		}
	}
	return nil
}

// ParseProperty splits one "key=value" librdkafka property.
func ParseProperty(kv string) (string, string, error) {
	k, v, ok := strings.Cut(kv, "=")
	k, v = strings.TrimSpace(k), strings.TrimSpace(v)
	if !ok || k == "" {
		// Name only the first word: the rest may be a secret typed without '='.
		name := ""
		if f := strings.Fields(kv); len(f) > 0 {
			name = f[0]
		}
		return "", "", fmt.Errorf("kafka property %q…: want key=value", name)
	}
	return k, v, nil
}

// ReadPropertiesFile reads a librdkafka properties file as kcat's -F does: one
// key=value per line, '#' comments and blank lines ignored.
func ReadPropertiesFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read kafka config file: %w", err)
	}
	defer f.Close()
	props := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, err := ParseProperty(line)
		if err != nil {
			return nil, fmt.Errorf("read kafka config file %s line %d: %w", path, n, err)
		}
		props[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read kafka config file %s: %w", path, err)
	}
	return props, nil
}

// properties merges defaults, user properties and the fixed ones.
func (c Config) properties() map[string]string {
	props := map[string]string{}
	for k, v := range defaults {
		props[k] = v
	}
	for k, v := range c.Properties {
		props[k] = v
	}
	for k, v := range fixed {
		props[k] = v
	}
	props["bootstrap.servers"] = c.Brokers
	if c.Isolate {
		props["batch.num.messages"] = "1"
		props["linger.ms"] = "0"
	}
	if c.ClientID != "" {
		if _, ok := c.Properties["client.id"]; !ok {
			props["client.id"] = c.ClientID
		}
	}
	return props
}

// Redacted lists the effective properties for a log line, hiding secrets.
func (c Config) Redacted() string {
	props := c.properties()
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		v := props[k]
		if secret(k) {
			v = "[redacted]"
		}
		fmt.Fprintf(&b, "%s=%s", k, v)
	}
	return b.String()
}

func secret(key string) bool {
	k := strings.ToLower(key)
	return strings.Contains(k, "password") || strings.Contains(k, "passphrase") || k == "sasl.oauthbearer.config" || strings.Contains(k, "secret") || strings.Contains(k, "key.pem") || strings.Contains(k, "token") || strings.HasSuffix(k, ".key")
}
