package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// scrapeNames returns the sample names /metrics serves at addr (histograms as
// their _bucket, _sum and _count series).
func scrapeNames(t *testing.T, addr string) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for _, l := range strings.Split(httpGet(t, "http://"+addr+"/metrics"), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		end := strings.IndexAny(l, "{ ")
		if end < 0 {
			t.Fatalf("metric line %q", l)
		}
		names[l[:end]] = true
	}
	return names
}

// scrapeGenerated are series Prometheus adds to every scrape target itself.
var scrapeGenerated = map[string]bool{"up": true, "scrape_duration_seconds": true, "scrape_samples_scraped": true}

// dashboardExprs returns every PromQL expression of the Grafana dashboard, by where
// it is: panel targets (rows' nested panels too) and variable queries.
func dashboardExprs(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	exprs := map[string]string{}
	type panel struct {
		ID      int               `json:"id"`
		Title   string            `json:"title"`
		Type    string            `json:"type"`
		Panels  []json.RawMessage `json:"panels"`
		Targets []struct {
			Expr  string `json:"expr"`
			RefID string `json:"refId"`
		} `json:"targets"`
	}
	var walk func([]json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("%s: panel: %v", path, err)
			}
			walk(p.Panels)
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", path, p.Title)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: panel %q target %s has no expr", path, p.Title, tg.RefID)
				}
				exprs[fmt.Sprintf("panel %q (%s)", p.Title, tg.RefID)] = tg.Expr
			}
		}
	}
	walk(d.Panels)
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type != "query" {
			continue
		}
		var q string
		if json.Unmarshal(v.Query, &q) != nil {
			var obj struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				t.Fatalf("%s: variable %s query: %v", path, v.Name, err)
			}
			q = obj.Query
		}
		exprs["variable "+v.Name] = grafanaVariableQuery(q)
	}
	if vars["datasource"] != "datasource" || vars["instance"] != "query" {
		t.Errorf("%s: variables %v, want a datasource variable and an instance variable", path, vars)
	}
	return exprs
}

// alertExprs returns the expression of every alerting or recording rule.
func alertExprs(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert, Record, Expr string
				Annotations         map[string]string
			}
		}
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	exprs := map[string]string{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			exprs["rule "+r.Alert+r.Record] = r.Expr
			if r.Alert != "" && strings.TrimSpace(r.Annotations["runbook"]) == "" {
				t.Errorf("%s: alert %s has no runbook annotation", path, r.Alert)
			}
		}
	}
	return exprs
}

// TestDeployFiles starts pgoutbox with its metrics server, makes the labelled series
// appear (events on two topics, a skipped change), and checks the files under
// deploy/ against it: every metric the Grafana dashboard and the alert rules query
// is served, and every flag, environment variable and probe path of the Kubernetes
// manifests exists.
func TestDeployFiles(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.start("--metrics-addr", "127.0.0.1:0", "--messages-prefix", "app")
	p.waitLog(`"streaming"`, 30*time.Second)
	addr := metricsAddr(t, p)
	e.insertTx(event{ID: uuidFor(1), Type: "order", AggID: "a", Kind: "T", Payload: `{}`},
		event{ID: uuidFor(2), Type: "invoice", AggID: "b", Kind: "T", Payload: `{}`})
	e.exec(`SELECT pg_logical_emit_message(true, 'someone-else', 'x')`)
	e.consumeN(2, 30*time.Second)
	var served map[string]bool
	waitFor(t, 10*time.Second, "the labelled series", func() bool {
		served = scrapeNames(t, addr)
		return served["pgoutbox_events_published_total"] && served["pgoutbox_skipped_changes_total"]
	})

	t.Run("metrics", func(t *testing.T) {
		exprs := dashboardExprs(t, "../deploy/grafana/pgoutbox.json")
		for k, v := range alertExprs(t, "../deploy/prometheus/alerts.yml") {
			exprs[k] = v
		}
		used := map[string]bool{}
		for where, expr := range exprs {
			names, err := metricNames(expr)
			if err != nil {
				t.Errorf("%s: %v", where, err)
			}
			for _, n := range names {
				used[n] = true
				if !served[n] && !scrapeGenerated[n] {
					t.Errorf("%s uses %s, which pgoutbox does not serve: %s", where, n, expr)
				}
			}
		}
		// Each metric an operator needs is on the dashboard or in an alert.
		for _, n := range []string{"pgoutbox_events_published_total", "pgoutbox_replication_lag_bytes", "pgoutbox_replication_lag_seconds",
			"pgoutbox_commit_to_ack_seconds_bucket", "pgoutbox_events_in_flight", "pgoutbox_producer_errors_total", "pgoutbox_reconnects_total",
			"pgoutbox_dead_lettered_total", "pgoutbox_streaming", "pgoutbox_ready", "pgoutbox_kafka_brokers_up", "pgoutbox_backfill_rows_total"} {
			if !used[n] {
				t.Errorf("neither the dashboard nor the alerts use %s", n)
			}
		}
		t.Logf("%d expressions, %d metric names, all served", len(exprs), len(used))
	})

	t.Run("kubernetes", func(t *testing.T) {
		checkKubernetes(t, addr)
	})
}

// helpFlags returns the flags and environment variables `pgoutbox <cmd> --help`
// lists.
func helpFlags(t *testing.T, cmd string) (flags, envs map[string]bool) {
	t.Helper()
	args := []string{"--help"}
	if cmd != "" {
		args = []string{cmd, "--help"}
	}
	out, err := exec.Command(binary, args...).Output()
	if err != nil {
		t.Fatalf("pgoutbox %s --help: %v", cmd, err)
	}
	flags, envs = map[string]bool{}, map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  --([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	for _, m := range regexp.MustCompile(`(?m)env: (PGOUTBOX_[A-Z0-9_]+)`).FindAllStringSubmatch(string(out), -1) {
		envs[m[1]] = true
	}
	if len(flags) < 10 || len(envs) != len(flags) {
		t.Fatalf("pgoutbox %s --help: %d flags, %d env vars:\n%s", cmd, len(flags), len(envs), out)
	}
	return flags, envs
}

// k8sObject is the part of a Kubernetes object the test reads.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name         string `yaml:"name"`
		GenerateName string `yaml:"generateName"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       struct {
		Replicas     *int `yaml:"replicas"`
		MinAvailable any  `yaml:"minAvailable"`
		Template     struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
		JobTemplate struct {
			Spec struct {
				Template struct {
					Spec podSpec `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		} `yaml:"jobTemplate"`
	} `yaml:"spec"`
}

type podSpec struct {
	Containers []container `yaml:"containers"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type container struct {
	Name    string   `yaml:"name"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []struct {
		Name string `yaml:"name"`
	} `yaml:"env"`
	EnvFrom []struct {
		ConfigMapRef *struct{ Name string } `yaml:"configMapRef"`
		SecretRef    *struct{ Name string } `yaml:"secretRef"`
	} `yaml:"envFrom"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	StartupProbe   *probe `yaml:"startupProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
}

// checkKubernetes parses every manifest under deploy/kubernetes and checks that the
// flags and PGOUTBOX_* variables pgoutbox containers get exist (for the subcommand
// their args name), that each probe's path is served by the metrics server at addr
// (not 404; 200 from this streaming instance), and that the pair has a
// PodDisruptionBudget and memory requests.
func checkKubernetes(t *testing.T, addr string) {
	files, err := filepath.Glob("../deploy/kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var objs []k8sObject
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s does not parse: %v", f, err)
			}
			if o.Kind == "" {
				t.Errorf("%s: a document without kind", f)
			}
			objs = append(objs, o)
		}
	}
	configs := map[string]map[string]string{} // "ConfigMap/name" -> data
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.Kind]++
		switch o.Kind {
		case "ConfigMap":
			configs["ConfigMap/"+o.Metadata.Name] = o.Data
		case "Secret":
			configs["Secret/"+o.Metadata.Name] = o.StringData
		}
	}
	if kinds["Deployment"] != 1 || kinds["PodDisruptionBudget"] != 1 || kinds["Secret"] == 0 {
		t.Errorf("manifests hold %v; want one Deployment, a PodDisruptionBudget and a Secret", kinds)
	}
	help := map[string][2]map[string]bool{}
	flagsOf := func(cmd string) (map[string]bool, map[string]bool) {
		h, ok := help[cmd]
		if !ok {
			f, e := helpFlags(t, cmd)
			h = [2]map[string]bool{f, e}
			help[cmd] = h
		}
		return h[0], h[1]
	}
	probes := 0
	for _, o := range objs {
		pods := []podSpec{o.Spec.Template.Spec, o.Spec.JobTemplate.Spec.Template.Spec}
		if o.Kind == "Deployment" && (o.Spec.Replicas == nil || *o.Spec.Replicas != 2) {
			t.Errorf("Deployment %s: replicas %v, want a primary/standby pair", o.Metadata.Name, o.Spec.Replicas)
		}
		for _, pod := range pods {
			for _, c := range pod.Containers {
				where := o.Kind + "/" + o.Metadata.Name + o.Metadata.GenerateName + " container " + c.Name
				cmd := ""
				if len(c.Args) > 0 && !strings.HasPrefix(c.Args[0], "-") {
					cmd = c.Args[0]
				}
				flags, envs := flagsOf(cmd)
				for _, a := range c.Args {
					if name, ok := strings.CutPrefix(a, "--"); ok {
						name, _, _ = strings.Cut(name, "=")
						if !flags[name] {
							t.Errorf("%s: flag --%s is not in pgoutbox %s --help", where, name, cmd)
						}
					}
				}
				// Variables set on the container are its command's; those from a
				// ConfigMap or Secret may also be the relay's (a republish Job shares
				// the pair's configuration, and ignores what it does not read).
				_, relayEnvs := flagsOf("")
				check := func(v string, shared bool) {
					if strings.HasPrefix(v, "PGOUTBOX_") && !envs[v] && !(shared && relayEnvs[v]) {
						t.Errorf("%s: %s is not a flag of pgoutbox %s", where, v, cmd)
					}
				}
				for _, e := range c.Env {
					check(e.Name, false)
				}
				for _, ef := range c.EnvFrom {
					ref := ""
					if ef.ConfigMapRef != nil {
						ref = "ConfigMap/" + ef.ConfigMapRef.Name
					} else if ef.SecretRef != nil {
						ref = "Secret/" + ef.SecretRef.Name
					}
					data, ok := configs[ref]
					if !ok {
						t.Errorf("%s: envFrom %s is not in the manifests", where, ref)
					}
					keys := make([]string, 0, len(data))
					for k := range data {
						keys = append(keys, k)
					}
					sort.Strings(keys)
					for _, k := range keys {
						check(k, true)
					}
				}
				if c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
					t.Errorf("%s: no memory request and limit", where)
				}
				for name, pr := range map[string]*probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
					if pr == nil {
						if o.Kind == "Deployment" {
							t.Errorf("%s: no %s probe", where, name)
						}
						continue
					}
					if pr.HTTPGet == nil {
						t.Errorf("%s: %s probe is not an HTTP GET", where, name)
						continue
					}
					probes++
					port := fmt.Sprint(pr.HTTPGet.Port)
					found := false
					for _, p := range c.Ports {
						found = found || p.Name == port || fmt.Sprint(p.ContainerPort) == port
					}
					if !found {
						t.Errorf("%s: %s probe port %s is not a container port", where, name, port)
					}
					code := httpStatus(t, "http://"+addr+pr.HTTPGet.Path)
					if code == http.StatusNotFound || code != http.StatusOK {
						t.Errorf("%s: %s probe GET %s answers %d from a streaming pgoutbox", where, name, pr.HTTPGet.Path, code)
					}
				}
			}
		}
	}
	if probes == 0 {
		t.Error("no probe found")
	}
}
