package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// require returns the path of tool. Without it the test fails in CI when ciNeeds
// (.ci/run installs it) and is skipped otherwise, saying so in the test log.
func require(t *testing.T, tool, pkg string, ciNeeds bool) string {
	t.Helper()
	path, err := exec.LookPath(tool)
	if err == nil {
		return path
	}
	if ciNeeds && os.Getenv("CI") != "" {
		t.Fatalf("%s is required in CI (Debian package %s; .ci/run installs it): %v", tool, pkg, err)
	}
	t.Skipf("SKIP: %s not found (Debian package %s): %v", tool, pkg, err)
	return ""
}

// unitDirectives reads a systemd unit file as section -> key -> values.
func unitDirectives(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: line %q is not key=value", path, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// flagEnvs are the environment variables of the relay's flags.
func flagEnvs() map[string]bool {
	known := map[string]bool{}
	newRelayFlags().fs.VisitAll(func(f *flag.Flag) { known[envName(f.Name)] = true })
	return known
}

// TestSystemdUnit: the unit is a hardened Type=notify service with a watchdog, its
// checkpoint in the state directory and its configuration in an environment file
// that sets only real flags.
func TestSystemdUnit(t *testing.T) {
	u := unitDirectives(t, "deploy/systemd/pgoutbox.service")
	svc := u["Service"]
	want := map[string]string{
		"Type": "notify", "NotifyAccess": "main", "ProtectSystem": "strict", "NoNewPrivileges": "yes",
		"StateDirectory": "pgoutbox", "EnvironmentFile": "/etc/pgoutbox/pgoutbox.env", "DynamicUser": "yes",
		"Restart": "on-failure", "RestartPreventExitStatus": "2",
	}
	for k, v := range want {
		if got := svc[k]; len(got) != 1 || got[0] != v {
			t.Errorf("[Service] %s=%v, want %s", k, got, v)
		}
	}
	if len(svc["WatchdogSec"]) != 1 {
		t.Errorf("no WatchdogSec")
	}
	known := flagEnvs()
	checkpoint := ""
	for _, e := range svc["Environment"] {
		k, v, _ := strings.Cut(e, "=")
		if !known[k] {
			t.Errorf("Environment=%s is not a pgoutbox flag", k)
		}
		if k == "PGOUTBOX_CHECKPOINT_FILE" {
			checkpoint = v
		}
	}
	if !strings.HasPrefix(checkpoint, "/var/lib/pgoutbox/") {
		t.Errorf("checkpoint %q is not in the state directory /var/lib/pgoutbox", checkpoint)
	}
	b, err := os.ReadFile("deploy/systemd/pgoutbox.env")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "#"))
		k, _, ok := strings.Cut(l, "=")
		if ok && strings.HasPrefix(k, "PGOUTBOX_") && !known[k] {
			t.Errorf("pgoutbox.env sets %s, not a pgoutbox flag", k)
		}
	}
}

// TestSystemdAnalyzeVerify: systemd itself accepts the unit, every directive known
// and valid. verify also checks that ExecStart's binary exists, so the unit is
// verified as a copy whose ExecStart names an executable that does (this test).
// Skipped, with a log line, only on a machine without systemd.
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze := require(t, "systemd-analyze", "systemd", false)
	b, err := os.ReadFile("deploy/systemd/pgoutbox.service")
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unit := strings.Replace(string(b), "ExecStart=/usr/local/bin/pgoutbox ", "ExecStart="+self+" ", 1)
	if unit == string(b) {
		t.Fatal("unit has no ExecStart=/usr/local/bin/pgoutbox")
	}
	path := filepath.Join(t.TempDir(), "pgoutbox.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestPrometheusRules: promtool accepts the alerting rules, and its unit tests
// (deploy/prometheus/alerts_test.yml: synthetic series, expected alerts with their
// rendered annotations) pass. Runs in CI, where .ci/run installs promtool.
func TestPrometheusRules(t *testing.T) {
	promtool := require(t, "promtool", "prometheus", true)
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "deploy/prometheus"
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestGrafanaDashboard: the dashboard imports as is: no __inputs to fill in, every
// panel and query on the ${datasource} variable, unique panel ids, a grid position
// for each panel. (Which metrics it queries is checked against a running pgoutbox
// in e2e's TestDeployFiles.)
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("deploy/grafana/pgoutbox.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string            `json:"uid"`
		Inputs []json.RawMessage `json:"__inputs"`
		Panels []struct {
			ID         int             `json:"id"`
			Type       string          `json:"type"`
			Title      string          `json:"title"`
			Datasource *dashDatasource `json:"datasource"`
			GridPos    *struct{ H, W int }
			Targets    []struct {
				Datasource *dashDatasource `json:"datasource"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	if d.UID == "" || len(d.Inputs) != 0 {
		t.Errorf("uid %q, %d __inputs: want a fixed uid and nothing to fill in on import", d.UID, len(d.Inputs))
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %q has no grid position", p.Title)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q datasource %+v, want ${datasource}", p.Title, p.Datasource)
		}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q target datasource %+v, want ${datasource}", p.Title, tg.Datasource)
			}
		}
	}
}

type dashDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}
