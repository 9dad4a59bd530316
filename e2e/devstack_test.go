package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkareal"
)

// TestDevStack runs the README's first command the way `make dev` does, asking the
// dev stack to stop after a few demo events instead of waiting for Ctrl-C: the demo
// events must reach Kafka and everything must stop cleanly; with kfake (make dev) and
// with Apache Kafka (make dev KAFKA=real).
func TestDevStack(t *testing.T) {
	devstack := filepath.Join(t.TempDir(), "devstack")
	build := exec.Command("go", "build", "-o", devstack, "./internal/devstack")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build devstack: %v\n%s", err, out)
	}
	for _, kafka := range []string{"kfake", "real"} {
		t.Run(kafka, func(t *testing.T) {
			if kafka == "real" {
				kafkareal.Require(t)
			}
			devStack(t, devstack, kafka)
		})
	}
}

func devStack(t *testing.T, devstack, kafka string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, devstack, "-pgoutbox", binary, "-events", "6", "-every", "100ms", "-kafka-port", "0", "-kafka", kafka)
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("devstack: %v\n%s", err, tail(string(out), 30))
	}
	for _, want := range []string{"postgres → inserted event 1", "kafka ← outbox.event.", "events arrived", "stopped; every acknowledged event is confirmed"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("devstack output lacks %q:\n%s", want, tail(string(out), 30))
		}
	}
}
