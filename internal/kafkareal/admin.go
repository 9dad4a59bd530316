package kafkareal

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// CreateTopic creates a topic with partitions and topic configs, on the PLAINTEXT
// listener, and waits until its leaders are known. A topic that exists is an error:
// tests use fresh names.
func (b *Broker) CreateTopic(ctx context.Context, name string, partitions int, configs map[string]string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Brokers()))
	if err != nil {
		return fmt.Errorf("kafkareal: %w", err)
	}
	defer cl.Close()
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = 30000
	t := kmsg.NewCreateTopicsRequestTopic()
	t.Topic = name
	t.NumPartitions = int32(partitions)
	t.ReplicationFactor = 1
	for k, v := range configs {
		c := kmsg.NewCreateTopicsRequestTopicConfig()
		c.Name, c.Value = k, kmsg.StringPtr(v)
		t.Configs = append(t.Configs, c)
	}
	req.Topics = append(req.Topics, t)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("kafkareal: create topic %s: %w", name, err)
	}
	for _, rt := range resp.Topics {
		if err := kerr.ErrorForCode(rt.ErrorCode); err != nil {
			msg := ""
			if rt.ErrorMessage != nil {
				msg = ": " + *rt.ErrorMessage
			}
			return fmt.Errorf("kafkareal: create topic %s: %w%s", name, err, msg)
		}
	}
	// Wait until every partition has a leader, so the first produce does not race
	// the topic's creation.
	for {
		mreq := kmsg.NewPtrMetadataRequest()
		mt := kmsg.NewMetadataRequestTopic()
		mt.Topic = kmsg.StringPtr(name)
		mreq.Topics = append(mreq.Topics, mt)
		mresp, err := mreq.RequestWith(ctx, cl)
		if err == nil && len(mresp.Topics) == 1 && mresp.Topics[0].ErrorCode == 0 && len(mresp.Topics[0].Partitions) == partitions {
			ready := true
			for _, p := range mresp.Topics[0].Partitions {
				if p.ErrorCode != 0 || p.Leader < 0 {
					ready = false
				}
			}
			if ready {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafkareal: topic %s has no leaders: %w", name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// CreateTopics creates each topic of name to partitions with no configs.
func (b *Broker) CreateTopics(ctx context.Context, topics map[string]int) error {
	var errs []string
	for name, n := range topics {
		if err := b.CreateTopic(ctx, name, n, nil); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}
