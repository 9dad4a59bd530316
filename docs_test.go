package main

import (
	"flag"
	"os"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// compose is the part of docker-compose.yml the test checks.
type compose struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Build       any               `yaml:"build"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		DependsOn   map[string]any    `yaml:"depends_on"`
		Volumes     []string          `yaml:"volumes"`
	} `yaml:"services"`
}

// TestDockerCompose: the file parses, names the three services, runs PostgreSQL 17
// with wal_level=logical and the outbox SQL, Kafka in KRaft mode, and configures
// pgoutbox only with environment variables that are real flags.
func TestDockerCompose(t *testing.T) {
	b, err := os.ReadFile("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
	for _, name := range []string{"postgres", "kafka", "pgoutbox"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("service %q missing", name)
		}
	}
	pg := c.Services["postgres"]
	if !strings.HasPrefix(pg.Image, "postgres:17") {
		t.Errorf("postgres image %q, want postgres:17", pg.Image)
	}
	if !strings.Contains(strings.Join(pg.Command, " "), "wal_level=logical") {
		t.Errorf("postgres command %v does not set wal_level=logical", pg.Command)
	}
	for _, f := range []string{"sql/outbox.sql", "sql/publication.sql", "sql/role.sql", "sql/allow-replication.sh"} {
		found := false
		for _, v := range pg.Volumes {
			found = found || strings.HasPrefix(v, "./"+f+":")
		}
		if !found {
			t.Errorf("postgres does not mount %s", f)
		}
		if _, err := os.Stat(f); err != nil {
			t.Errorf("mounted file: %v", err)
		}
	}
	k := c.Services["kafka"]
	if !strings.HasPrefix(k.Image, "apache/kafka:") {
		t.Errorf("kafka image %q, want Apache Kafka", k.Image)
	}
	if !strings.Contains(k.Environment["KAFKA_PROCESS_ROLES"], "controller") {
		t.Errorf("kafka is not in KRaft mode (KAFKA_PROCESS_ROLES=%q)", k.Environment["KAFKA_PROCESS_ROLES"])
	}
	p := c.Services["pgoutbox"]
	if p.Build == nil {
		t.Errorf("pgoutbox service is not built from the Dockerfile")
	}
	for _, dep := range []string{"postgres", "kafka"} {
		if _, ok := p.DependsOn[dep]; !ok {
			t.Errorf("pgoutbox does not depend on %s", dep)
		}
	}
	known := map[string]bool{}
	newRelayFlags().fs.VisitAll(func(f *flag.Flag) { known[envName(f.Name)] = true })
	for env := range p.Environment {
		if !known[env] {
			t.Errorf("pgoutbox environment %s is not a pgoutbox flag", env)
		}
	}
	for _, env := range []string{"PGOUTBOX_POSTGRES_URL", "PGOUTBOX_KAFKA_BROKERS"} {
		if p.Environment[env] == "" {
			t.Errorf("pgoutbox environment lacks %s", env)
		}
	}
}

// TestDockerfile: multi-stage, non-root runtime user.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if strings.Count(s, "\nFROM ") < 2 {
		t.Errorf("Dockerfile is not multi-stage")
	}
	if !strings.Contains(s, "\nUSER 65532") && !strings.Contains(s, "\nUSER nonroot") {
		t.Errorf("Dockerfile does not switch to a non-root user")
	}
}

// TestReadmeDocumentsEveryFlag: every flag of the relay, of status and of republish is
// in the README's configuration tables.
func TestReadmeDocumentsEveryFlag(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	newRelayFlags().fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(readme, "`--"+f.Name) {
			t.Errorf("README does not document --%s", f.Name)
		}
	})
	newRepublishFlags().fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(readme, "`--"+f.Name) {
			t.Errorf("README does not document republish --%s", f.Name)
		}
	})
	for _, f := range []string{"--json", "--max-retained-mb"} {
		if !strings.Contains(readme, "`"+f) {
			t.Errorf("README does not document status %s", f)
		}
	}
}
