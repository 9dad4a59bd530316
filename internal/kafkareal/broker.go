// Package kafkareal runs a real Apache Kafka broker for tests: one KRaft node that is
// both broker and controller, on free ports of 127.0.0.1, with its storage formatted in
// a directory of its own. kfake (internal/kafkatest) is the fast broker of most tests;
// this one is for what only the real broker can tell: its transaction coordinator,
// fencing, its limits and its security listeners.
//
// The jars and Java come from internal/jvm. The core API takes no *testing.T so that
// non-test programs (make dev, make bench) can use it; New adds the test conveniences.
package kafkareal

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pgoutbox/pgoutbox/internal/jvm"
)

// User is a SCRAM-SHA-512 user created when the storage is formatted.
type User struct{ Name, Password string }

// Options configures a broker. The zero value is a broker with topic auto-creation
// off, Kafka's default message size limit and a PLAINTEXT listener only.
type Options struct {
	// Port is the PLAINTEXT listener's port on 127.0.0.1 (0: a free one).
	Port int
	// Dir holds the broker's data, configuration and log; empty makes a temporary
	// directory that Close removes.
	Dir string
	// AutoCreateTopics sets auto.create.topics.enable.
	AutoCreateTopics bool
	// Partitions is num.partitions, the partition count of auto-created topics
	// (0: 1, Kafka's default).
	Partitions int
	// MessageMaxBytes sets message.max.bytes, the largest record batch the broker
	// takes (0: Kafka's default, 1048588).
	MessageMaxBytes int
	// SCRAMUsers adds a SASL_PLAINTEXT listener (SCRAM-SHA-512) and creates these
	// users at format time. The PLAINTEXT listener stays for the tests' own clients.
	SCRAMUsers []User
	// TLS adds an SSL listener with a certificate for 127.0.0.1 and localhost,
	// signed by a throwaway CA (CAFile).
	TLS bool
	// Config are more broker properties; they win over the ones set here.
	Config map[string]string
	// MaxHeap is the JVM's -Xmx (default 256m).
	MaxHeap string
	// JVMArgs, if set, replace the JVM options for a quick start and a small heap
	// (jvm.SmallHeap(MaxHeap)), e.g. for a benchmark.
	JVMArgs []string
	// Logf, if set, reports progress (start, stop).
	Logf func(format string, args ...any)
}

// Broker is a running (or stopped) single-node Kafka.
type Broker struct {
	opts    Options
	dir     string
	tempDir bool
	ports   ports
	proc    *jvm.Process
}

type ports struct{ plain, controller, sasl, ssl int }

// stopGrace is how long a clean shutdown may take before the JVM is killed.
const stopGrace = 30 * time.Second

// Start formats a new broker's storage and starts it, returning once it answers
// metadata requests.
func Start(ctx context.Context, o Options) (*Broker, error) {
	if err := jvm.Available(); err != nil {
		return nil, err
	}
	b := &Broker{opts: o, dir: o.Dir}
	if b.dir == "" {
		dir, err := os.MkdirTemp("", "kafkareal-")
		if err != nil {
			return nil, fmt.Errorf("kafkareal: %w", err)
		}
		b.dir, b.tempDir = dir, true
	}
	var err error
	if b.ports, err = freePorts(o); err != nil {
		b.cleanup()
		return nil, err
	}
	if err := b.writeConfig(); err != nil {
		b.cleanup()
		return nil, err
	}
	if err := b.format(ctx); err != nil {
		b.cleanup()
		return nil, err
	}
	if err := b.start(ctx); err != nil {
		b.cleanup()
		return nil, err
	}
	return b, nil
}

func (b *Broker) logf(format string, args ...any) {
	if b.opts.Logf != nil {
		b.opts.Logf("kafkareal: "+format, args...)
	}
}

// Brokers is the PLAINTEXT bootstrap address, as librdkafka and franz-go take it.
func (b *Broker) Brokers() string { return addr(b.ports.plain) }

// SASLBrokers is the SASL_PLAINTEXT (SCRAM-SHA-512) listener's address, empty
// without Options.SCRAMUsers.
func (b *Broker) SASLBrokers() string { return addr(b.ports.sasl) }

// TLSBrokers is the SSL listener's address, empty without Options.TLS.
func (b *Broker) TLSBrokers() string { return addr(b.ports.ssl) }

// CAFile is the PEM file of the CA that signed the SSL listener's certificate.
func (b *Broker) CAFile() string { return filepath.Join(b.dir, "ca.pem") }

// Dir is the broker's directory: data, configuration and log.
func (b *Broker) Dir() string { return b.dir }

// LogFile is the broker's log, appended to by every start.
func (b *Broker) LogFile() string { return filepath.Join(b.dir, "broker.log") }

// LogTail returns the last n lines of the broker's log.
func (b *Broker) LogTail(n int) string { return jvm.Tail(b.LogFile(), n) }

// Running reports whether the broker process is running.
func (b *Broker) Running() bool { return b.proc != nil && b.proc.Running() }

// Pid is the broker JVM's process id (0 when stopped).
func (b *Broker) Pid() int {
	if !b.Running() {
		return 0
	}
	return b.proc.Pid()
}

func addr(port int) string {
	if port == 0 {
		return ""
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// freePorts picks the listeners' ports. Another process could take one before the
// broker binds it; then the start fails with the bind error in its log.
func freePorts(o Options) (ports, error) {
	n := 2
	if len(o.SCRAMUsers) > 0 {
		n++
	}
	if o.TLS {
		n++
	}
	var got []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return ports{}, fmt.Errorf("kafkareal: free port: %w", err)
		}
		ls = append(ls, l)
		got = append(got, l.Addr().(*net.TCPAddr).Port)
	}
	p := ports{plain: got[0], controller: got[1]}
	if o.Port != 0 {
		p.plain = o.Port
	}
	i := 2
	if len(o.SCRAMUsers) > 0 {
		p.sasl = got[i]
		i++
	}
	if o.TLS {
		p.ssl = got[i]
	}
	return p, nil
}

func (b *Broker) properties() map[string]string {
	o := b.opts
	listeners := []string{"PLAINTEXT://" + addr(b.ports.plain), "CONTROLLER://" + addr(b.ports.controller)}
	advertised := []string{"PLAINTEXT://" + addr(b.ports.plain)}
	if b.ports.sasl != 0 {
		listeners = append(listeners, "SASL_PLAINTEXT://"+addr(b.ports.sasl))
		advertised = append(advertised, "SASL_PLAINTEXT://"+addr(b.ports.sasl))
	}
	if b.ports.ssl != 0 {
		listeners = append(listeners, "SSL://"+addr(b.ports.ssl))
		advertised = append(advertised, "SSL://"+addr(b.ports.ssl))
	}
	p := map[string]string{
		"process.roles":                    "broker,controller",
		"node.id":                          "1",
		"controller.quorum.voters":         "1@" + addr(b.ports.controller),
		"listeners":                        strings.Join(listeners, ","),
		"advertised.listeners":             strings.Join(advertised, ","),
		"controller.listener.names":        "CONTROLLER",
		"inter.broker.listener.name":       "PLAINTEXT",
		"listener.security.protocol.map":   "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL",
		"log.dirs":                         filepath.Join(b.dir, "data"),
		"auto.create.topics.enable":        strconv.FormatBool(o.AutoCreateTopics),
		"num.partitions":                   "1",
		"group.initial.rebalance.delay.ms": "0",
		// A single node: internal topics with one replica, and fewer partitions
		// than the default 50 so that creating them on first use is quick.
		"offsets.topic.replication.factor":                 "1",
		"offsets.topic.num.partitions":                     "4",
		"transaction.state.log.replication.factor":         "1",
		"transaction.state.log.min.isr":                    "1",
		"transaction.state.log.num.partitions":             "4",
		"share.coordinator.state.topic.replication.factor": "1",
		"share.coordinator.state.topic.min.isr":            "1",
		"min.insync.replicas":                              "1",
		"default.replication.factor":                       "1",
		// A restart after SIGKILL registers the broker again only once the old
		// registration's session expired (default 9s).
		"broker.session.timeout.ms":    "2000",
		"broker.heartbeat.interval.ms": "500",
		"num.network.threads":          "2",
		"num.io.threads":               "4",
	}
	if o.Partitions > 0 {
		p["num.partitions"] = strconv.Itoa(o.Partitions)
	}
	if o.MessageMaxBytes > 0 {
		p["message.max.bytes"] = strconv.Itoa(o.MessageMaxBytes)
	}
	if b.ports.sasl != 0 {
		p["sasl.enabled.mechanisms"] = "SCRAM-SHA-512"
		p["listener.name.sasl_plaintext.sasl.enabled.mechanisms"] = "SCRAM-SHA-512"
		p["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"] = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
	}
	if b.ports.ssl != 0 {
		p["listener.name.ssl.ssl.keystore.type"] = "PEM"
		p["listener.name.ssl.ssl.keystore.location"] = filepath.Join(b.dir, "server-keystore.pem")
		p["listener.name.ssl.ssl.client.auth"] = "none"
	}
	for k, v := range o.Config {
		p[k] = v
	}
	return p
}

func (b *Broker) configFile() string { return filepath.Join(b.dir, "server.properties") }

func (b *Broker) writeConfig() error {
	if b.opts.TLS {
		if err := writeTLS(b.dir); err != nil {
			return err
		}
	}
	p := b.properties()
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var s strings.Builder
	s.WriteString("# Written by internal/kafkareal.\n")
	for _, k := range keys {
		fmt.Fprintf(&s, "%s=%s\n", k, p[k])
	}
	if err := os.WriteFile(b.configFile(), []byte(s.String()), 0o644); err != nil {
		return fmt.Errorf("kafkareal: %w", err)
	}
	return nil
}

func (b *Broker) heap() string {
	if b.opts.MaxHeap != "" {
		return b.opts.MaxHeap
	}
	return "256m"
}

// format runs Kafka's StorageTool (kafka-storage.sh format) on the data directory,
// creating the SCRAM users.
func (b *Broker) format(ctx context.Context) error {
	cp, err := jvm.Classpath(jvm.Kafka)
	if err != nil {
		return err
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	args := []string{"format", "--cluster-id", base64.RawURLEncoding.EncodeToString(id), "--config", b.configFile(), "--ignore-formatted"}
	for _, u := range b.opts.SCRAMUsers {
		args = append(args, "--add-scram", fmt.Sprintf("SCRAM-SHA-512=[name=%s,password=%s]", u.Name, u.Password))
	}
	log := filepath.Join(b.dir, "format.log")
	p, err := jvm.Start(cp, jvm.SmallHeap("128m"), "kafka.tools.StorageTool", args, log, nil)
	if err != nil {
		return err
	}
	select {
	case <-p.Exited():
	case <-ctx.Done():
		p.Kill()
		return fmt.Errorf("kafkareal: format storage: %w", ctx.Err())
	}
	if err := p.Err(); err != nil {
		return fmt.Errorf("kafkareal: format storage: %w:\n%s", err, jvm.Tail(log, 20))
	}
	return nil
}

func (b *Broker) start(ctx context.Context) error {
	cp, err := jvm.Classpath(jvm.Kafka)
	if err != nil {
		return err
	}
	begin := time.Now()
	jvmArgs := b.opts.JVMArgs
	if jvmArgs == nil {
		jvmArgs = jvm.SmallHeap(b.heap())
	}
	p, err := jvm.Start(cp, jvmArgs, "kafka.Kafka", []string{b.configFile()}, b.LogFile(), brokerLogLevels)
	if err != nil {
		return err
	}
	b.proc = p
	if err := b.waitReady(ctx); err != nil {
		p.Kill()
		return fmt.Errorf("%w; broker log:\n%s", err, b.LogTail(30))
	}
	b.logf("broker at %s up in %s (pid %d, dir %s)", b.Brokers(), time.Since(begin).Round(time.Millisecond), p.Pid(), b.dir)
	return nil
}

// brokerLogLevels keep the broker's log to what explains a failing test: warnings and
// errors, the server's start and stop, and the transaction coordinator (fencing,
// aborts of timed-out transactions).
var brokerLogLevels = map[string]string{
	"root":                                     "WARN",
	"kafka.server.KafkaRaftServer":             "INFO",
	"kafka.server.BrokerServer":                "INFO",
	"kafka.coordinator.transaction":            "INFO",
	"org.apache.kafka.coordinator.transaction": "INFO",
}

// startTimeout bounds a broker's start on a busy machine.
const startTimeout = 90 * time.Second

// waitReady waits until the broker lists itself in a metadata response: it is then
// registered with its controller, unfenced, and serves clients.
func (b *Broker) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Brokers()), kgo.RetryTimeout(time.Second),
		kgo.RetryBackoffFn(func(int) time.Duration { return 100 * time.Millisecond }))
	if err != nil {
		return fmt.Errorf("kafkareal: %w", err)
	}
	defer cl.Close()
	var last error
	for {
		select {
		case <-b.proc.Exited():
			return fmt.Errorf("kafkareal: broker exited during start: %v", b.proc.Err())
		default:
		}
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := kmsg.NewPtrMetadataRequest().RequestWith(rctx, cl)
		rcancel()
		if err == nil && len(resp.Brokers) > 0 {
			return nil
		}
		if err != nil {
			last = err
		} else {
			last = errors.New("no broker in the metadata response yet")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafkareal: broker did not answer within %s: %v", startTimeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Stop shuts the broker down cleanly (SIGTERM to its process group; SIGKILL after
// 30s), keeping its data for Restart.
func (b *Broker) Stop() error {
	if b.proc == nil || !b.proc.Running() {
		return nil
	}
	err := b.proc.Stop(stopGrace)
	b.logf("broker at %s stopped", b.Brokers())
	return err
}

// Kill kills the broker with SIGKILL, as a crash would, keeping its data.
func (b *Broker) Kill() {
	if b.proc != nil {
		b.proc.Kill()
	}
}

// Restart stops the broker if it runs and starts it again on the same data and ports.
func (b *Broker) Restart(ctx context.Context) error {
	if err := b.Stop(); err != nil {
		return err
	}
	return b.start(ctx)
}

// Close stops the broker and removes its directory if Start made it.
func (b *Broker) Close() error {
	err := b.Stop()
	b.cleanup()
	return err
}

func (b *Broker) cleanup() {
	if b.tempDir {
		os.RemoveAll(b.dir)
	}
}
