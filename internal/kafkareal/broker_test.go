package kafkareal

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// TestBroker starts a broker with every listener, writes through the PLAINTEXT one,
// reads back through SASL/SCRAM and TLS, is refused a topic that does not exist, restarts it on the same data and ports (the
// records are still there), and checks that Close leaves no process behind.
func TestBroker(t *testing.T) {
	Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b, err := Start(ctx, Options{
		SCRAMUsers: []User{{Name: "alice", Password: "alice-secret"}},
		TLS:        true,
		Logf:       t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			if t.Failed() {
				t.Logf("broker log:\n%s", b.LogTail(60))
			}
			b.Close()
		}
	}()
	if err := b.CreateTopic(ctx, "t", 3, nil); err != nil {
		t.Fatal(err)
	}
	produce(t, ctx, b.Brokers(), "t", "one", "two", "three")
	// Topic auto-creation is off by default: an unknown topic is refused.
	if err := produceErr(ctx, b.Brokers(), "nope"); err == nil {
		t.Errorf("produced to a topic that does not exist")
	} else {
		t.Logf("produce to a missing topic: %v", err)
	}

	scramAuth := kgo.SASL(scram.Auth{User: "alice", Pass: "alice-secret"}.AsSha512Mechanism())
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(b.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("CA file holds no certificate")
	}
	tlsDial := kgo.DialTLSConfig(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	for name, c := range map[string]struct {
		brokers string
		opt     kgo.Opt
	}{"plain": {b.Brokers(), nil}, "scram": {b.SASLBrokers(), scramAuth}, "tls": {b.TLSBrokers(), tlsDial}} {
		if got := consume(t, ctx, c.brokers, "t", 3, c.opt); len(got) != 3 {
			t.Errorf("%s: read %d records, want 3", name, len(got))
		}
	}
	// A wrong password is refused: the SCRAM listener really authenticates.
	bad := kgo.SASL(scram.Auth{User: "alice", Pass: "wrong"}.AsSha512Mechanism())
	if err := ping(ctx, b.SASLBrokers(), bad); err == nil {
		t.Errorf("SCRAM with a wrong password was accepted")
	}

	oldPid := b.Pid()
	brokers := b.Brokers()
	if err := b.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if b.Brokers() != brokers {
		t.Errorf("restarted on %s, want %s", b.Brokers(), brokers)
	}
	if processAlive(oldPid) {
		t.Errorf("the first broker process %d still runs after Restart", oldPid)
	}
	if got := consume(t, ctx, b.Brokers(), "t", 3, nil); len(got) != 3 {
		t.Errorf("after restart: read %d records, want the 3 written before", len(got))
	}
	produce(t, ctx, b.Brokers(), "t", "four")
	if got := consume(t, ctx, b.Brokers(), "t", 4, nil); len(got) != 4 {
		t.Errorf("after restart: read %d records, want 4", len(got))
	}

	pid, dir := b.Pid(), b.Dir()
	closed = true
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if processAlive(pid) {
		t.Errorf("broker process %d still runs after Close", pid)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("broker directory %s left behind: %v", dir, err)
	}
}

func processAlive(pid int) bool {
	if pid == 0 {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}

func produce(t *testing.T, ctx context.Context, brokers, topic string, values ...string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, v := range values {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte(v), Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatalf("produce %q: %v", v, err)
		}
	}
}

func produceErr(ctx context.Context, brokers, topic string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.RecordDeliveryTimeout(5*time.Second))
	if err != nil {
		return err
	}
	defer cl.Close()
	return cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("x")}).FirstErr()
}

func ping(ctx context.Context, brokers string, opt kgo.Opt) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), opt)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return cl.Ping(ctx)
}

func consume(t *testing.T, ctx context.Context, brokers, topic string, n int, opt kgo.Opt) []*kgo.Record {
	t.Helper()
	opts := []kgo.Opt{kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}
	if opt != nil {
		opts = append(opts, opt)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var got []*kgo.Record
	for len(got) < n && ctx.Err() == nil {
		f := cl.PollFetches(ctx)
		for _, fe := range f.Errors() {
			if !errors.Is(fe.Err, context.DeadlineExceeded) {
				t.Logf("fetch %s: %v", brokers, fe.Err)
			}
		}
		got = append(got, f.Records()...)
	}
	return got
}
