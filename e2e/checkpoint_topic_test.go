package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// TestCheckpointTopicSharedWithOpenTransaction: another producer (another slot's
// pgoutbox, say) holds a transaction open on the shared checkpoint topic. Its open
// transaction holds back the last stable offset that read_committed readers stop
// at, below this instance's own newest checkpoint record. pgoutbox, restarted after
// a crash between its Kafka commit and its local checkpoint, must wait until that
// transaction ends and read its newest record — not an older one, which would make
// it publish again events Kafka already has.
func TestCheckpointTopicSharedWithOpenTransaction(t *testing.T) {
	e := newEnv(t, envOptions{kafka: kafkatest.Options{Partitions: 3}})
	e.readCommitted = true
	args := []string{"--exactly-once"}
	e.publishRun(1, 10, args...) // an older checkpoint record

	// The next run dies right after its Kafka commit: Kafka has the events and a
	// newer record, behind the other producer's open transaction; the local
	// checkpoint does not.
	crash := e.startEnv([]string{"PGOUTBOX_FAILPOINT=after-kafka-commit=1"}, args...)
	crash.waitLog(`"streaming"`, 30*time.Second)
	other, err := kgo.NewClient(kgo.SeedBrokers(e.brokers), kgo.TransactionalID("another-slot"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DefaultProduceTopic("pgoutbox.checkpoints"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx := context.Background()
	if err := other.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := other.ProduceSync(ctx, &kgo.Record{Partition: 0, Key: []byte("another-slot"), Value: []byte(`{}`)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	e.insertRange(11, 10)
	if code := crash.wait(30 * time.Second); code != killed {
		t.Fatalf("exit %d, want death at the failpoint", code)
	}
	e.waitInactive(10 * time.Second)

	p := e.start(args...)
	time.Sleep(2 * time.Second) // it waits for the other producer's transaction
	if strings.Contains(p.out.String(), `"streaming"`) && !strings.Contains(p.out.String(), "events up to the checkpoint record") {
		t.Fatalf("pgoutbox streamed without the newest checkpoint record:\n%s", tail(p.out.String(), 20))
	}
	if err := other.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	p.waitLog(`"streaming"`, 30*time.Second)
	e.insertRange(21, 5)
	recs := e.consumeN(25, 30*time.Second)
	time.Sleep(500 * time.Millisecond)
	recs = e.consume(3*time.Second, nil)
	seen := map[string]int{}
	for _, r := range recs {
		seen[string(r.Headers["id"])]++
	}
	for i := 1; i <= 25; i++ {
		if n := seen[uuidFor(i)]; n != 1 {
			t.Errorf("event %d seen %d times by a read_committed consumer", i, n)
		}
	}
	e.stopClean(p)
}
