// Package kafkatest runs in-process Kafka brokers for tests, the
// fault-injection suite, benchmarks and the local dev stack, and reads topics
// back with a consumer independent of the code under test.
//
// The broker is kfake from franz-go: it speaks the real Kafka protocol
// (idempotent and transactional produce, read_committed fetch) so librdkafka
// talks to it unchanged, and its control hooks (ControlKey, SleepControl)
// inject broker faults. The core API takes no *testing.T so non-test programs
// can use it; New adds the testing conveniences.
package kafkatest

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Options configures a kfake cluster. The zero value is one broker on a
// random port, in memory, creating topics on first use.
type Options struct {
	// Ports are the brokers' ports on 127.0.0.1, one broker per port. Empty
	// means one broker on a random port. Restarting a cluster on the ports
	// of the old one (see Ports) lets clients reconnect to it.
	Ports []int
	// DataDir persists the cluster's state there; a cluster started on a
	// DataDir reloads what a previous one saved on Close. Empty keeps
	// everything in memory.
	DataDir string
	// Partitions is the partition count of auto-created topics; 0 keeps
	// kfake's default of 10.
	Partitions int32
	// SeedTopics are created at start, topic name to partition count (0
	// or less uses Partitions). Ignored when DataDir holds saved state.
	SeedTopics map[string]int32
	// AutoCreate lets clients create topics by asking for their metadata,
	// as Kafka's auto.create.topics.enable does. It is also on whenever
	// SeedTopics is empty, since such a cluster could otherwise hold no
	// topic at all; set SeedTopics and leave AutoCreate false to make
	// producing to an unknown topic fail.
	AutoCreate bool
	// Extra options go to kfake.NewCluster last, so they win, e.g.
	// kfake.NumBrokers(3) or kfake.WithLogger.
	Extra []kfake.Opt
}

// Start starts a kfake cluster.
func Start(opts Options) (*kfake.Cluster, error) {
	kopts := []kfake.Opt{kfake.NumBrokers(1)}
	if len(opts.Ports) > 0 {
		kopts = append(kopts, kfake.Ports(opts.Ports...))
	}
	if opts.DataDir != "" {
		kopts = append(kopts, kfake.DataDir(opts.DataDir))
	}
	if opts.Partitions > 0 {
		kopts = append(kopts, kfake.DefaultNumPartitions(int(opts.Partitions)))
	}
	if opts.AutoCreate || len(opts.SeedTopics) == 0 {
		kopts = append(kopts, kfake.AllowAutoTopicCreation())
	}
	topics := make([]string, 0, len(opts.SeedTopics))
	for t := range opts.SeedTopics {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	for _, t := range topics {
		p := opts.SeedTopics[t]
		if p <= 0 {
			p = opts.Partitions // kfake uses its default for 0 too
		}
		kopts = append(kopts, kfake.SeedTopics(p, t))
	}
	kopts = append(kopts, opts.Extra...)
	c, err := kfake.NewCluster(kopts...)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: start kfake: %w", err)
	}
	return c, nil
}

// New starts a cluster for the test and closes it in t.Cleanup.
func New(t testing.TB, opts Options) *kfake.Cluster {
	t.Helper()
	c, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// Brokers returns the cluster's bootstrap servers, comma-separated as both
// librdkafka's bootstrap.servers and Consume take them. Like
// kfake.Cluster.ListenAddrs it blocks forever once the cluster is closed.
func Brokers(c *kfake.Cluster) string {
	return strings.Join(c.ListenAddrs(), ",")
}

// Ports returns the brokers' ports, to restart a cluster where its clients
// expect it. Call it before Close: like kfake.Cluster.ListenAddrs it blocks
// forever once the cluster is closed.
func Ports(c *kfake.Cluster) []int {
	var ports []int
	for _, addr := range c.ListenAddrs() {
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			continue
		}
		if n, err := strconv.Atoi(p); err == nil {
			ports = append(ports, n)
		}
	}
	return ports
}
