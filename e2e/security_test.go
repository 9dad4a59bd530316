package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// certAuthority is a throwaway CA for one test.
type certAuthority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *certAuthority {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &certAuthority{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// serverCert issues a certificate for 127.0.0.1 and localhost; it returns the
// certificate and key in PEM.
func (ca *certAuthority) serverCert(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

// serverDir makes a directory the PostgreSQL server user can read, removed after
// the test. t.TempDir is not: its parent is private to the test's user.
func serverDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgoutbox-e2e-tls-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	serverOwns(t, dir)
	return dir
}

// writeServerFile writes a file the server reads, owned by the server user.
func writeServerFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	serverOwns(t, path)
}

// tlsURL is e's connection URL verifying the server against the CA in rootCert.
func (e *env) tlsURL(rootCert string) string {
	u, err := url.Parse(e.url())
	if err != nil {
		e.t.Fatal(err)
	}
	u.RawQuery = url.Values{"sslmode": {"verify-full"}, "sslrootcert": {rootCert}}.Encode()
	return u.String()
}

// TestTLSPostgres: pgoutbox verifies the server certificate (sslmode=verify-full)
// on both of its connections, and refuses a server its CA did not sign.
func TestTLSPostgres(t *testing.T) {
	dir := serverDir(t)
	ca := newCA(t, "pgoutbox e2e CA")
	certPEM, keyPEM := ca.serverCert(t)
	certFile, keyFile, caFile := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"), filepath.Join(dir, "ca.pem")
	writeServerFile(t, certFile, certPEM)
	writeServerFile(t, keyFile, keyPEM)
	writeServerFile(t, caFile, ca.pem)
	c := ownCluster(t, map[string]string{"ssl": "on", "ssl_cert_file": certFile, "ssl_key_file": keyFile})
	e := newEnv(t, envOptions{cluster: c})

	p := e.start("--postgres-url", e.tlsURL(caFile))
	p.waitLog(`"streaming"`, 30*time.Second)
	e.insertTx(event{ID: uuidFor(1), Type: "order", AggID: "a", Kind: "Created", Payload: `{"n":1}`},
		event{ID: uuidFor(2), Type: "order", AggID: "b", Kind: "Created", Payload: `{"n":2}`})
	e.consumeN(2, 30*time.Second)
	// Both connections, the walsender's too, are encrypted.
	var conns, encrypted, walsenders int
	err := e.admin.QueryRow(context.Background(), `SELECT count(*), count(*) FILTER (WHERE s.ssl),
			count(*) FILTER (WHERE a.backend_type = 'walsender')
		FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = $1`, role).Scan(&conns, &encrypted, &walsenders)
	if err != nil {
		t.Fatal(err)
	}
	if conns < 2 || encrypted != conns || walsenders != 1 {
		t.Errorf("pgoutbox has %d connections (%d walsender), %d of them with TLS; want at least 2, 1 walsender, all TLS", conns, walsenders, encrypted)
	}
	e.stopClean(p)

	other := newCA(t, "another CA")
	otherFile := filepath.Join(dir, "other-ca.pem")
	writeServerFile(t, otherFile, other.pem)
	code, out := e.run(60*time.Second, "--postgres-url", e.tlsURL(otherFile))
	if code != 1 {
		t.Fatalf("server certificate from another CA: exit code %d, want 1; output:\n%s", code, tail(out, 30))
	}
	line := errorLine(t, out)
	t.Logf("%s", line)
	mentions(t, line, "TLS", "certificate", "sslrootcert")
}

// saslUser is the Kafka user the SASL tests authenticate pgoutbox as.
const (
	saslUser     = "outbox-producer"
	saslPassword = "Kafka-pw-n0t-for-LOGS"
)

// saslProps are the librdkafka properties for mechanism with password pw.
func saslProps(mechanism, pw string) []string {
	return []string{"security.protocol=SASL_PLAINTEXT", "sasl.mechanism=" + mechanism,
		"sasl.username=" + saslUser, "sasl.password=" + pw}
}

func kafkaConfigFlags(props []string) []string {
	var flags []string
	for _, p := range props {
		flags = append(flags, "--kafka-config", p)
	}
	return flags
}

// saslClient authenticates the test's consumer.
func saslClient(mechanism string) kgo.Opt {
	var m sasl.Mechanism
	switch mechanism {
	case "PLAIN":
		m = plain.Auth{User: saslUser, Pass: saslPassword}.AsMechanism()
	case "SCRAM-SHA-256":
		m = scram.Auth{User: saslUser, Pass: saslPassword}.AsSha256Mechanism()
	}
	return kgo.SASL(m)
}

// TestSASL: pgoutbox authenticates to Kafka with SASL, given with --kafka-config or
// --kafka-config-file, and never prints the password; with a wrong password it stays
// up and says Kafka rejected its credentials.
func TestSASL(t *testing.T) {
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256"} {
		opts := kafkatest.Options{Extra: []kfake.Opt{kfake.EnableSASL(), kfake.User(mech, saslUser, saslPassword)}}
		t.Run(mech, func(t *testing.T) {
			e := newEnv(t, envOptions{kafka: opts})
			e.saslPublishes(mech, kafkaConfigFlags(saslProps(mech, saslPassword)))
		})
		t.Run(mech+" config file", func(t *testing.T) {
			e := newEnv(t, envOptions{kafka: opts})
			file := filepath.Join(t.TempDir(), "kafka.properties")
			content := "# SASL for the e2e test\n\n" + strings.Join(saslProps(mech, saslPassword), "\n") + "\n"
			if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			e.saslPublishes(mech, []string{"--kafka-config-file", file})
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		opts := kafkatest.Options{Extra: []kfake.Opt{kfake.EnableSASL(), kfake.User("PLAIN", saslUser, saslPassword)}}
		e := newEnv(t, envOptions{kafka: opts})
		rejectLikeKafka(e.kafka)
		const wrong = "Wrong-kafka-pw-42"
		p := e.start(kafkaConfigFlags(saslProps("PLAIN", wrong))...)
		p.waitLog(`"streaming"`, 30*time.Second)
		e.insertTx(event{ID: uuidFor(1), Type: "order", AggID: "a", Kind: "Created", Payload: `{}`})
		p.waitLog("kafka rejected pgoutbox's TLS or SASL setup", 30*time.Second)
		t.Logf("%s", firstLine(p.out.String(), "kafka rejected"))
		time.Sleep(2 * time.Second)
		select {
		case <-p.done:
			t.Fatalf("pgoutbox exited (%v) on a Kafka authentication failure; it must retry:\n%s", p.err, tail(p.out.String(), 30))
		default:
		}
		noSecret(t, p.out.String(), wrong, saslPassword)
		// Nothing reached Kafka, so nothing may be confirmed.
		p.kill()
		e.waitInactive(10 * time.Second)
		if n := e.pendingChanges(); n != 1 {
			t.Errorf("slot would send %d inserts, want the 1 Kafka never got", n)
		}
	})
	t.Run("exactly-once without transactional ACLs", func(t *testing.T) {
		// The principal may write the event topics but not use a transactional id:
		// no retry helps, so pgoutbox stops and says what to grant.
		write := kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: "outbox.", Pattern: kmsg.ACLResourcePatternTypePrefixed,
			Operation: kmsg.ACLOperationWrite, Allow: true}
		opts := kafkatest.Options{Extra: []kfake.Opt{kfake.EnableSASL(), kfake.EnableACLs(),
			kfake.Superuser("PLAIN", "admin", "admin-pw"), kfake.User("PLAIN", saslUser, saslPassword, write)}}
		e := newEnv(t, envOptions{kafka: opts})
		code, out := e.run(60*time.Second, append(kafkaConfigFlags(saslProps("PLAIN", saslPassword)), "--exactly-once")...)
		if code != 1 || !strings.Contains(out, `WRITE and DESCRIBE on TransactionalId "pgoutbox-`+e.slot+`"`) {
			t.Fatalf("exit %d, want 1 naming the ACL to grant:\n%s", code, tail(out, 5))
		}
		noSecret(t, out, saslPassword)
	})
}

// rejectLikeKafka makes the broker answer a PLAIN authentication with a wrong
// password as Kafka does, with SASL_AUTHENTICATION_FAILED and a message, before it
// closes the connection. kfake only closes the connection, which librdkafka cannot
// tell from a network failure.
func rejectLikeKafka(c *kfake.Cluster) {
	c.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		r := req.(*kmsg.SASLAuthenticateRequest)
		parts := strings.Split(string(r.SASLAuthBytes), "\x00")
		if len(parts) != 3 || parts[2] == saslPassword {
			return nil, nil, false
		}
		c.KeepControl()
		resp := r.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		msg := "Authentication failed: Invalid username or password"
		resp.ErrorMessage = &msg
		return resp, nil, true
	})
}

// saslPublishes runs pgoutbox with flags and checks events reach the test's
// authenticated consumer and the password stays out of the output.
func (e *env) saslPublishes(mech string, flags []string) {
	e.t.Helper()
	p := e.start(flags...)
	p.waitLog(`"streaming"`, 30*time.Second)
	e.insertTx(event{ID: uuidFor(1), Type: "order", AggID: "a", Kind: "Created", Payload: `{"n":1}`},
		event{ID: uuidFor(2), Type: "customer", AggID: "b", Kind: "Created", Payload: `{"n":2}`})
	recs := consumeAs(e.t, e.brokers, `^outbox\.event\.`, []kgo.Opt{saslClient(mech)}, 30*time.Second, hasIDs(uuidFor(1), uuidFor(2)))
	if !hasIDs(uuidFor(1), uuidFor(2))(recs) {
		e.t.Fatalf("events did not reach Kafka over SASL %s:\n%s", mech, tail(p.out.String(), 30))
	}
	e.stopClean(p)
	out := p.out.String()
	noSecret(e.t, out, saslPassword)
	if !strings.Contains(firstLine(out, "pgoutbox starting"), "sasl.password=[redacted]") {
		e.t.Errorf("the start line does not show the SASL password redacted: %s", firstLine(out, "pgoutbox starting"))
	}
}

// listeners returns the local addresses of the TCP sockets process pid listens on.
func listeners(t *testing.T, pid int) []string {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	var addrs []string
	for _, file := range []string{"tcp", "tcp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, file))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] {
				continue
			}
			addrs = append(addrs, procAddr(t, fields[1]))
		}
		f.Close()
	}
	sort.Strings(addrs)
	return addrs
}

// procAddr decodes a /proc/net/tcp address: the IP in host byte order (little
// endian on the machines these tests run on) in 32-bit words, then the port.
func procAddr(t *testing.T, s string) string {
	t.Helper()
	ipHex, portHex, _ := strings.Cut(s, ":")
	raw, err := hex.DecodeString(ipHex)
	if err != nil {
		t.Fatal(err)
	}
	ip := make(net.IP, len(raw))
	for i := 0; i < len(raw); i += 4 {
		ip[i], ip[i+1], ip[i+2], ip[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	port, _ := strconv.ParseUint(portHex, 16, 16)
	return net.JoinHostPort(ip.String(), strconv.Itoa(int(port)))
}

// metricsAddr returns the address pgoutbox logged it serves metrics on.
func metricsAddr(t *testing.T, p *proc) string {
	t.Helper()
	p.waitLog("serving /metrics", 30*time.Second)
	var line struct{ Addr string }
	if err := json.Unmarshal([]byte(firstLine(p.out.String(), "serving /metrics")), &line); err != nil || line.Addr == "" {
		t.Fatalf("no address in the metrics log line (%v): %s", err, firstLine(p.out.String(), "serving /metrics"))
	}
	return line.Addr
}

// scrapeMetric returns the value of an unlabelled metric from /metrics at addr.
func scrapeMetric(t *testing.T, addr, name string) string {
	t.Helper()
	body := httpGet(t, "http://"+addr+"/metrics")
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return v
		}
	}
	t.Errorf("/metrics has no %s", name)
	return ""
}

func httpGet(t *testing.T, u string) string {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET %s: %s", u, resp.Status)
	}
	return string(b)
}

// TestMetricsListen: pgoutbox opens a listening socket only when --metrics-addr
// asks for one, and only there.
func TestMetricsListen(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.start()
	p.waitLog(`"streaming"`, 30*time.Second)
	e.insertTx(event{ID: uuidFor(1), Type: "order", AggID: "a", Kind: "Created", Payload: `{}`})
	e.consumeN(1, 30*time.Second)
	if l := listeners(t, p.cmd.Process.Pid); len(l) != 0 {
		t.Errorf("without --metrics-addr pgoutbox listens on %v", l)
	}
	e.stopClean(p)

	p = e.start("--metrics-addr", "127.0.0.1:0")
	p.waitLog(`"streaming"`, 30*time.Second)
	addr := metricsAddr(t, p)
	if l := listeners(t, p.cmd.Process.Pid); len(l) != 1 || l[0] != addr {
		t.Errorf("with --metrics-addr 127.0.0.1:0 pgoutbox listens on %v, want only %s (the logged address)", l, addr)
	}
	if v := scrapeMetric(t, addr, "pgoutbox_streaming"); v != "1" {
		t.Errorf("pgoutbox_streaming = %q, want 1", v)
	}
	e.stopClean(p)
}
