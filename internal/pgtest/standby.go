package pgtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
)

// StandbyOptions configures a physical streaming standby of a primary.
type StandbyOptions struct {
	// Name is the standby's application_name on the primary, which
	// synchronous_standby_names lists to make it synchronous, and the name of
	// the physical replication slot it streams from, so the primary keeps the
	// WAL the standby still needs while it is stopped. Required; lower case
	// letters, digits and underscores.
	Name string
	// Settings are added to the primary's Options.Settings (a standby needs
	// max_connections, max_wal_senders and the like at least as high as its
	// primary's, so it starts from them). synchronous_standby_names is not
	// taken from the primary: a promoted standby would wait for itself.
	Settings map[string]string
	// Port is the standby's TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// Logf, if set, receives server start and stop messages; nil uses the
	// primary's.
	Logf func(format string, args ...any)
}

var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// StartStandby makes a standby of primary with pg_basebackup -R (which writes
// primary_conninfo and standby.signal) in a new temporary directory, starts it
// and returns once it accepts connections. The primary must be running; its
// pg_hba.conf already trusts replication connections from 127.0.0.1. The
// standby's slot stays on the primary. On error nothing is left behind but that
// slot.
func StartStandby(ctx context.Context, primary *Cluster, opts StandbyOptions) (*Cluster, error) {
	if !slotName.MatchString(opts.Name) {
		return nil, fmt.Errorf("pgtest: standby name %q: want 1 to 63 lower case letters, digits or underscores", opts.Name)
	}
	if !primary.Running() {
		return nil, errors.New("pgtest: standby: the primary is not running")
	}
	popts := primary.opts
	settings := maps.Clone(popts.Settings)
	if settings == nil {
		settings = map[string]string{}
	}
	delete(settings, "synchronous_standby_names")
	maps.Copy(settings, opts.Settings)
	copts := Options{Settings: settings, Port: opts.Port, Durable: popts.Durable, Logf: opts.Logf}
	if copts.Logf == nil {
		copts.Logf = primary.logf
	}
	c, err := newCluster(copts)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	conninfo := fmt.Sprintf("host=127.0.0.1 port=%d user=%s application_name=%s", primary.Port, superuser, opts.Name)
	cmd := c.acct.command(filepath.Join(c.bin, "pg_basebackup"),
		"-D", c.DataDir, "-d", conninfo, "-X", "stream", "-R", "-C", "-S", opts.Name,
		"--checkpoint=fast", "--no-sync")
	cmd.Dir = c.root
	if out, err := runContext(ctx, cmd); err != nil {
		c.Close()
		return nil, fmt.Errorf("pgtest: pg_basebackup: %w\n%s", err, out)
	}
	c.logf("pgtest: pg_basebackup of 127.0.0.1:%d took %v", primary.Port, time.Since(start).Round(time.Millisecond))
	// The copied pgtest.conf is the primary's: startOnPort writes the
	// standby's own (port, socket directory), and pg_basebackup's
	// postgresql.auto.conf, read after it, keeps primary_conninfo.
	if err := c.startOnPort(ctx, copts); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Promote makes a standby a primary (pg_promote, as pg_ctl promote) and waits
// until it accepts writes.
func (c *Cluster) Promote(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, c.SuperURL("postgres"))
	if err != nil {
		return fmt.Errorf("pgtest: promote: %w", err)
	}
	defer conn.Close(context.Background())
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_promote(true, 60)`).Scan(&ok); err != nil {
		return fmt.Errorf("pgtest: promote: %w", err)
	}
	if !ok {
		return errors.New("pgtest: promote: the standby did not finish promotion within 60s")
	}
	c.logf("pgtest: postgres on 127.0.0.1:%d promoted", c.Port)
	return nil
}

// WaitStreaming waits until the primary's walsender for the standby named
// name streams with sync_state syncState: "sync" for one that
// synchronous_standby_names lists (it is "async" until the standby reported its
// first flush position), "async" for others.
func (c *Cluster) WaitStreaming(ctx context.Context, name, syncState string) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	var last string
	for {
		conn, err := pgx.Connect(ctx, c.SuperURL("postgres"))
		if err == nil {
			err = conn.QueryRow(ctx, `SELECT state || ' ' || sync_state FROM pg_stat_replication WHERE application_name = $1`, name).Scan(&last)
			conn.Close(context.Background())
			if err == nil && last == "streaming "+syncState {
				return nil
			}
		}
		if err != nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgtest: standby %s not streaming (%s) from 127.0.0.1:%d: %w (last seen: %s)", name, syncState, c.Port, ctx.Err(), last)
		case <-time.After(25 * time.Millisecond):
		}
	}
}
